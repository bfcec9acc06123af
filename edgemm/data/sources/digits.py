"""The built-in demo dataset: a digit seen, heard and described, by imperfect sensors.

Each sample is one digit (0-9) observed three ways:
- ``image``: a real handwritten digit (scikit-learn's digits), resized to 32x32,
  with sensor noise and occlusion;
- ``audio``: the digit spoken by a synthetic voice (shipped clips, see
  ``generate.py``) with background noise at a random SNR, as a log-mel spectrogram;
- ``text``: a short, often vague hint ("an odd number", "one more than six").

Any modality is missing with probability ``P_MISSING`` (zeros / silence / no text),
so no single modality can reach the accuracy that fusing them does. Splits are by
source: held-out handwriting for val/test, held-out espeak-ng voices for ``test``,
a different synthesiser (flite) for ``ood``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from edgemm.data import preprocess as pp
from edgemm.data import text_hints
from edgemm.data.datasets import DATASETS, DataSource, Split
from edgemm.data.generate import mulaw_decode
from edgemm.errors import ConfigError
from edgemm.lazy import lazy_import

sklearn_datasets = lazy_import("sklearn.datasets", "pip install scikit-learn")

NAME = "edgemm-digits"
SPLITS = ("train", "val", "test", "ood")
SPLIT_SIZES = {"train": 4000, "val": 1000, "test": 1500, "ood": 1500}
P_MISSING = 0.25
AUDIO_SECONDS = 1.0
TIME_FRAMES = 100
TEXT_LEN = 8
ASSET = Path(__file__).parent.parent / "assets" / "spoken_digits.npz"
TOKENIZER = pp.WordTokenizer(text_hints.vocabulary())


@lru_cache(maxsize=1)
def _clips() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    if not ASSET.is_file():
        raise ConfigError(f"demo audio {ASSET} is missing",
                          "reinstall edgemm, or regenerate it with `python -m edgemm.data.generate`")
    data = np.load(ASSET)
    audio, offsets = mulaw_decode(data["audio"]), data["offsets"]
    clips = [audio[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return clips, data["digit"].astype(np.int64), data["split"]


def _audio_pool(split: str) -> np.ndarray:
    """Clip indices for a split: train/val share espeak voices (clip-level 90/10)."""
    _, _, clip_split = _clips()
    if split in ("test", "ood"):
        return np.flatnonzero(clip_split == split)
    train = np.flatnonzero(clip_split == "train")
    held = np.random.default_rng(1).random(len(train)) < 0.1
    return train[held] if split == "val" else train[~held]


def _image_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    digits = sklearn_datasets.load_digits()
    order = np.random.default_rng(2).permutation(len(digits.target))
    n = len(order)
    cut = {"train": order[: int(0.6 * n)], "val": order[int(0.6 * n): int(0.7 * n)]}
    index = cut.get(split, order[int(0.7 * n):])
    return (digits.images[index] / 16.0).astype(np.float32), digits.target[index]


def _noisy_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = pp.resize_image(image)
    image = image + rng.normal(0, rng.uniform(0.1, 0.5), image.shape)
    if rng.random() < 0.5:
        size = int(rng.integers(10, 18))
        y, x = rng.integers(0, pp.IMAGE_SIZE - size, size=2)
        image[y:y + size, x:x + size] = rng.uniform(0, 1)
    return np.clip(image, 0, 1).astype(np.float32)


def _noisy_audio(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = int(pp.SAMPLE_RATE * AUDIO_SECONDS)
    wave = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, max(1, length - len(clip)) if len(clip) < length else 1))
    wave[start:start + len(clip)] = clip[: length - start]
    snr_db = rng.uniform(-5, 20)
    signal_power = float(np.mean(clip ** 2)) + 1e-8
    wave += rng.normal(0, np.sqrt(signal_power / 10 ** (snr_db / 10)), length).astype(np.float32)
    return wave


@lru_cache(maxsize=len(SPLITS))
def load(split: str) -> Split:
    """Build a split deterministically (seeded per split) from the shipped sources."""
    images, image_labels = _image_pool(split)
    clips, clip_labels, _ = _clips()
    audio_index = _audio_pool(split)
    rng = np.random.default_rng(SPLITS.index(split) + 10)
    n = SPLIT_SIZES[split]
    labels = rng.integers(0, 10, size=n)
    present = rng.random((n, 3)) >= P_MISSING
    present[~present.any(axis=1), rng.integers(0, 3)] = True  # at least one sensor works
    silence = pp.log_mel(np.zeros(int(pp.SAMPLE_RATE * AUDIO_SECONDS), np.float32), TIME_FRAMES)
    image_x = np.zeros((n, 1, pp.IMAGE_SIZE, pp.IMAGE_SIZE), np.float32)
    audio_x = np.repeat(silence[None], n, axis=0)
    text_x = np.zeros((n, TEXT_LEN), np.int64)
    for i, label in enumerate(labels):
        if present[i, 0]:
            image_x[i, 0] = _noisy_image(images[rng.choice(np.flatnonzero(image_labels == label))], rng)
        if present[i, 1]:
            clip = clips[rng.choice(audio_index[clip_labels[audio_index] == label])]
            audio_x[i] = pp.log_mel(_noisy_audio(clip, rng), TIME_FRAMES)
        if present[i, 2]:
            text_x[i] = TOKENIZER.encode(text_hints.hint(int(label), rng), TEXT_LEN)
    return Split(split, {"image": image_x, "audio": audio_x, "text": text_x}, labels.astype(np.int64))


def raw_sample(split: str = "test", index: int = 0) -> dict[str, object]:
    """One sample as the sensors deliver it: an 8x8 scan, a waveform, a string (for end-to-end timing)."""
    images, image_labels = _image_pool(split)
    clips, clip_labels, _ = _clips()
    rng = np.random.default_rng(index)
    label = int(image_labels[index % len(image_labels)])
    pool = _audio_pool(split)
    clip = clips[rng.choice(pool[clip_labels[pool] == label])]
    return {"image": images[index % len(images)], "audio": _noisy_audio(clip, rng),
            "text": text_hints.hint(label, rng)}


PREPROCESSORS = {
    "image": lambda raw: pp.resize_image(raw)[None, None],
    "audio": lambda raw: pp.log_mel(raw, TIME_FRAMES)[None],
    "text": lambda raw: TOKENIZER.encode(raw, TEXT_LEN)[None],
}


@DATASETS.register
class Digits(DataSource):
    name = NAME
    description = "a digit seen (handwriting), heard (synthetic voices) and described (vague text hints)"
    splits = SPLITS
    supports = ("image", "audio", "text", "raw-samples")
    preprocessors = PREPROCESSORS

    def load(self, split: str, ref: str, spec=None) -> Split:
        return load(split)

    def raw_sample(self, split: str = "test", index: int = 0) -> dict[str, object]:
        return raw_sample(split, index)
