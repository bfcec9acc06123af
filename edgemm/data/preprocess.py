"""Per-modality preprocessing: raw sensor data -> model inputs (numpy only).

Kept outside the model so that the exported graph holds the towers and the
fusion, and so that the benchmark can time preprocessing on its own.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 32
SAMPLE_RATE = 8000
N_FFT = 256
HOP = 80
N_MELS = 40
# Global log-mel normalisation, measured on the training split once (see digits.py).
LOGMEL_MEAN = -3.0
LOGMEL_STD = 4.0


def resize_image(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bilinear resize of a 2-D grey image in [0, 1] to ``size`` x ``size``."""
    h, w = image.shape
    ys = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
    xs = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """HTK-style triangular mel filters, shape [n_mels, n_fft // 2 + 1]."""
    def hz_to_mel(f): return 2595.0 * np.log10(1.0 + f / 700.0)
    def mel_to_hz(m): return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2)
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = mel_to_hz(mels)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(waveform: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """Normalised log-mel spectrogram [N_MELS, frames] of an 8 kHz waveform (the demo's audio input)."""
    mel = (log_mel_features(waveform, SAMPLE_RATE, N_FFT, HOP, N_MELS) - LOGMEL_MEAN) / LOGMEL_STD
    if n_frames is not None:
        mel = fit_length(mel, n_frames, fill=float((np.log(1e-6) - LOGMEL_MEAN) / LOGMEL_STD))
    return mel.astype(np.float32)


def log_mel_features(waveform: np.ndarray, rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Log-mel spectrogram [n_mels, frames] (Hann window, power spectrum, natural log)."""
    audio = np.pad(np.asarray(waveform, dtype=np.float32), (n_fft // 2, n_fft // 2))
    frames = 1 + max(0, (len(audio) - n_fft) // hop)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(audio[idx] * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    return np.log(spectrum @ mel_filterbank(n_mels, n_fft, rate).T + 1e-6).T.astype(np.float32)


def fit_length(array: np.ndarray, length: int, fill: float = 0.0) -> np.ndarray:
    """Crop or pad the last axis to ``length``."""
    if array.shape[-1] >= length:
        return array[..., :length]
    pad = [(0, 0)] * (array.ndim - 1) + [(0, length - array.shape[-1])]
    return np.pad(array, pad, constant_values=fill)


class WordTokenizer:
    """Word-level tokenizer over a closed vocabulary: id 0 is padding, 1 is unknown."""

    PAD, UNK = 0, 1

    def __init__(self, words: list[str]):
        self.vocab = ["[PAD]", "[UNK]"] + sorted(set(words))
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, length: int) -> np.ndarray:
        ids = [self.index.get(w, self.UNK) for w in re.findall(r"[a-z]+", text.lower())][:length]
        return np.array(ids + [self.PAD] * (length - len(ids)), dtype=np.int64)
