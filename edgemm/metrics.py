"""Task metrics and fidelity measures (numpy only)."""
from __future__ import annotations

import numpy as np


def top1_hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per sample: is the top-scoring class the label (accuracy is its mean; the gates pair two of them)."""
    return np.asarray(logits).argmax(axis=-1) == np.asarray(labels)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float((np.asarray(reference).argmax(axis=-1) == np.asarray(candidate).argmax(axis=-1)).mean())


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    a = np.asarray(reference, np.float64).reshape(len(reference), -1)
    b = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")  # never 1.0: a NaN output agrees with nothing
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.maximum(denom, 1e-30), 1.0)
    return float(cos.mean())


def max_abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64)), initial=0.0))


def max_rel_error(reference: np.ndarray, candidate: np.ndarray, floor: float = 1e-3) -> float:
    """Largest |a - b| / max(|a|, floor); the floor keeps near-zero references from dominating."""
    ref = np.asarray(reference, np.float64)
    diff = np.abs(ref - np.asarray(candidate, np.float64))
    return float(np.max(diff / np.maximum(np.abs(ref), floor), initial=0.0))


def non_finite_count(values: np.ndarray) -> int:
    return int(values.size - np.isfinite(values).sum()) if np.asarray(values).dtype.kind in "fc" else 0
