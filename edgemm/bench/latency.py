"""Latency measurement that keeps its raw samples (rendered later as JSON and Markdown)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgemm.bench.stats import percentile_ci, relative_half_width

NOISE_THRESHOLD = 0.05  # a p50 whose 95 % CI is wider than ±5 % is reported as noisy


@dataclass
class Latency:
    """Per-call wall-clock latencies of one (artifact, backend, batch size) in milliseconds."""

    batch_size: int
    samples_ms: list[float] = field(repr=False)
    warmup: int = 0

    @property
    def count(self) -> int:
        return len(self.samples_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples_ms))

    @property
    def std(self) -> float:
        return float(np.std(self.samples_ms))

    @property
    def throughput(self) -> float:
        """Items per second at this batch size (from the mean latency)."""
        return self.batch_size * 1000.0 / self.mean

    @property
    def p50_relative_half_width(self) -> float:
        """Half-width of the p50's 95 % confidence interval, relative to p50."""
        return relative_half_width(self.samples_ms, 50)

    def noisy(self, max_relative_ci: float = NOISE_THRESHOLD) -> bool:
        return self.p50_relative_half_width > max_relative_ci

    def summary(self) -> dict:
        return {"batch_size": self.batch_size, "count": self.count, "warmup": self.warmup, "p50_ms": self.p50,
                "p90_ms": self.p90, "p99_ms": self.p99, "mean_ms": self.mean, "std_ms": self.std,
                "p50_ci95_ms": list(percentile_ci(self.samples_ms, 50)),
                "p90_ci95_ms": list(percentile_ci(self.samples_ms, 90)),
                "noisy": self.noisy(), "throughput_per_s": self.throughput}

    def to_dict(self) -> dict:
        return {**self.summary(), "samples_ms": [round(s, 5) for s in self.samples_ms]}


@dataclass
class TimingSettings:
    warmup: int = 10
    min_iterations: int = 50
    min_seconds: float = 1.0
    max_iterations: int = 5000


def measure(fn: Callable[[], object], batch_size: int, settings: TimingSettings = TimingSettings()) -> Latency:
    """Warm up, then time until both the minimum count and the minimum duration are reached."""
    for _ in range(settings.warmup):
        fn()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < settings.max_iterations and (
            len(samples) < settings.min_iterations or time.perf_counter() - started < settings.min_seconds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return Latency(batch_size, samples, settings.warmup)
