"""Synthesise the spoken-digit audio that the demo dataset ships.

Run ``python -m edgemm.data.generate`` on a machine with Debian's ``espeak-ng``
and ``flite`` (``apt-get install espeak-ng flite``). It writes
``edgemm/data/assets/spoken_digits.npz``: 8 kHz, 8-bit mu-law clips (telephone
quality, which keeps the shipped file small), with the engine, voice, speed and
split of every clip. The demo never needs the synthesisers themselves.

Splits by *speaker*, so the test figures are on voices the model never heard:
- ``train``/``val``: espeak-ng voices (7 English accents x 12 variants),
- ``test``: espeak-ng voices with 4 held-out variants,
- ``ood``: flite voices, a different synthesis engine (out of domain).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import wave
from math import gcd
from pathlib import Path

import numpy as np

from edgemm.lazy import lazy_import

scipy_signal = lazy_import("scipy.signal")

SAMPLE_RATE = 8000
MAX_SECONDS = 1.0
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f5", "klatt", "Andy"]
TEST_VARIANTS = ["m6", "f4", "klatt3", "Annie"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
DEFAULT_OUT = Path(__file__).parent / "assets" / "spoken_digits.npz"


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        raw = wav.readframes(wav.getnframes())
        rate = wav.getframerate()
        channels = wav.getnchannels()
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio
    g = gcd(rate, SAMPLE_RATE)
    return scipy_signal.resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


def _trim(audio: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Drop leading/trailing silence and cap the length at MAX_SECONDS."""
    loud = np.flatnonzero(np.abs(audio) > threshold * max(np.abs(audio).max(), 1e-6))
    if loud.size:
        audio = audio[max(loud[0] - 80, 0): loud[-1] + 80]
    audio = audio[: int(SAMPLE_RATE * MAX_SECONDS)]
    return audio / max(np.abs(audio).max(), 1e-6) * 0.9


def mulaw_encode(audio: np.ndarray, mu: int = 255) -> np.ndarray:
    audio = np.clip(audio, -1.0, 1.0)
    y = np.sign(audio) * np.log1p(mu * np.abs(audio)) / np.log1p(mu)
    return np.round((y + 1) / 2 * mu).astype(np.uint8)


def mulaw_decode(codes: np.ndarray, mu: int = 255) -> np.ndarray:
    y = codes.astype(np.float32) / mu * 2 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def _synth(cmd: list[str], wav_path: Path) -> np.ndarray:
    subprocess.run(cmd, check=True, capture_output=True)
    audio, rate = _read_wav(wav_path)
    return _trim(_resample(audio, rate))


def generate(out: Path = DEFAULT_OUT, seed: int = 0) -> Path:
    for tool in ("espeak-ng", "flite"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install espeak-ng flite")
    rng = np.random.default_rng(seed)
    clips, meta = [], []
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        plan = [("train", v, 2) for v in TRAIN_VARIANTS] + [("test", v, 1) for v in TEST_VARIANTS]
        for split, variant, renditions in plan:
            for accent in ACCENTS:
                for digit, word in enumerate(DIGIT_WORDS):
                    for _ in range(renditions):
                        speed, pitch = int(rng.integers(120, 200)), int(rng.integers(25, 75))
                        cmd = ["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch),
                               "-w", str(wav), word]
                        clips.append(_synth(cmd, wav))
                        meta.append((digit, split, "espeak-ng", f"{accent}+{variant}", speed))
        for voice in FLITE_VOICES:
            for digit, word in enumerate(DIGIT_WORDS):
                for stretch in (0.8, 1.0, 1.25):
                    cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}",
                           "-t", word, "-o", str(wav)]
                    clips.append(_synth(cmd, wav))
                    meta.append((digit, "ood", "flite", voice, int(175 / stretch)))
    lengths = np.array([len(c) for c in clips], dtype=np.int32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        audio=mulaw_encode(np.concatenate(clips)),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        digit=np.array([m[0] for m in meta], dtype=np.int8),
        split=np.array([m[1] for m in meta]),
        engine=np.array([m[2] for m in meta]),
        voice=np.array([m[3] for m in meta]),
        speed=np.array([m[4] for m in meta], dtype=np.int16),
        sample_rate=np.array(SAMPLE_RATE),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    path = generate(parser.parse_args().out, parser.parse_args().seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
