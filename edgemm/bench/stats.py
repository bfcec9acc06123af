"""Distribution-free statistics for latency samples (no normality assumption: latencies are skewed)."""
from __future__ import annotations

import math

import numpy as np

from edgemm.lazy import lazy_import

scipy_stats = lazy_import("scipy.stats")


def percentile_ci(samples: list[float] | np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the ``q``-th percentile from order statistics (exact, distribution-free).

    SciPy's ``quantile_test`` inverts the binomial test on the count of samples below
    the percentile; its interval lies between two order statistics of the samples.
    """
    data = np.asarray(samples, dtype=float)
    if data.size == 0:
        raise ValueError("no samples")
    interval = scipy_stats.quantile_test(data, q=float(np.percentile(data, q)), p=q / 100).confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    # With few samples a tail of the interval is unbounded (nan/inf): the sample extreme is what we know.
    return (low if math.isfinite(low) else float(data.min()), high if math.isfinite(high) else float(data.max()))


def relative_half_width(samples: list[float] | np.ndarray, q: float = 50, confidence: float = 0.95) -> float:
    """Half the CI width of the percentile, relative to the percentile itself."""
    lo, hi = percentile_ci(samples, q, confidence)
    mid = float(np.percentile(samples, q))
    return (hi - lo) / 2 / mid if mid > 0 else math.inf
