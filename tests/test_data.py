"""The demo dataset: real sources, speaker-disjoint splits, missing modalities."""
from __future__ import annotations

import numpy as np

from edgemm.data.sources import digits
from edgemm.data import preprocess as pp
from edgemm.data.datasets import load_split


def test_splits_have_contract_shapes_and_balanced_labels():
    split = load_split(digits.NAME, "test")
    assert len(split) == digits.SPLIT_SIZES["test"]
    assert split.inputs["image"].shape == (len(split), 1, 32, 32)
    assert split.inputs["audio"].shape == (len(split), pp.N_MELS, digits.TIME_FRAMES)
    assert split.inputs["text"].shape == (len(split), digits.TEXT_LEN)
    counts = np.bincount(split.labels, minlength=10)
    assert counts.min() > 0.5 * counts.mean()


def test_modalities_go_missing_like_real_sensors():
    split = load_split(digits.NAME, "train")
    image_missing = (split.inputs["image"].reshape(len(split), -1).max(axis=1) == 0).mean()
    text_missing = (split.inputs["text"] == 0).all(axis=1).mean()
    assert 0.15 < image_missing < 0.35
    # 'noise' hints can also be empty, so text is missing a little more often than P_MISSING.
    assert 0.15 < text_missing < 0.45


def test_test_voices_and_flite_are_held_out():
    _, _, clip_split = digits._clips()
    voices = np.load(digits.ASSET)["voice"]
    train, test, ood = (set(voices[clip_split == s]) for s in ("train", "test", "ood"))
    assert train and test and ood
    assert not train & test and not train & ood
    assert set(np.load(digits.ASSET)["engine"][clip_split == "ood"]) == {"flite"}


def test_split_build_is_deterministic():
    a, b = digits.load.__wrapped__("val"), digits.load.__wrapped__("val")
    assert all(np.array_equal(a.inputs[k], b.inputs[k]) for k in a.inputs)
    assert np.array_equal(a.labels, b.labels)


def test_log_mel_and_tokenizer():
    tone = np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000).astype(np.float32)
    mel = pp.log_mel(tone)
    assert mel.shape == (pp.N_MELS, 101)
    peak_band = mel.mean(axis=1).argmax()
    centres = pp.mel_filterbank().argmax(axis=1) * 8000 / pp.N_FFT
    assert abs(centres[peak_band] - 1000) < 150  # energy lands in the 1 kHz band
    assert pp.log_mel(tone, n_frames=50).shape == (pp.N_MELS, 50)
    ids = digits.TOKENIZER.encode("One more than SIX zebra", 8)
    assert ids.dtype == np.int64 and len(ids) == 8
    assert ids[4] == digits.TOKENIZER.UNK and (ids[5:] == 0).all()
