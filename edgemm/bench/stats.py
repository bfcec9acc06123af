"""Distribution-free statistics for latency samples (no normality assumption: latencies are skewed)."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom


def percentile_ci(samples: list[float] | np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the ``q``-th percentile from order statistics.

    The number of samples below the true percentile is Binomial(n, q/100); the
    interval between the order statistics at that distribution's tails covers the
    percentile with at least ``confidence`` (exact, distribution-free).
    """
    data = np.sort(np.asarray(samples, dtype=float))
    n = len(data)
    if n == 0:
        raise ValueError("no samples")
    p, alpha = q / 100.0, 1.0 - confidence
    lo = int(binom.ppf(alpha / 2, n, p))          # count of samples below the lower bound
    hi = int(binom.ppf(1 - alpha / 2, n, p)) + 1  # 1-based rank of the upper bound
    return float(data[max(lo - 1, 0)]), float(data[min(hi, n) - 1])


def relative_half_width(samples: list[float] | np.ndarray, q: float = 50, confidence: float = 0.95) -> float:
    """Half the CI width of the percentile, relative to the percentile itself."""
    lo, hi = percentile_ci(samples, q, confidence)
    mid = float(np.percentile(samples, q))
    return (hi - lo) / 2 / mid if mid > 0 else math.inf
