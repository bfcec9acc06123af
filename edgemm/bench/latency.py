"""Latency: how it is measured (:class:`TimingSettings`, :func:`measure`) and the value that keeps its
raw samples and renders its own statistics (:class:`Latency`, after optimum-benchmark's)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer

from edgemm.bench.stats import percentile_ci, relative_half_width
from edgemm.config import Strict

NOISE_THRESHOLD = 0.05  # a p50 whose 95 % CI is wider than ±5 % is reported as noisy


class TimingSettings(Strict):
    """How long to time each artifact: the option group every timing command shares (defaults live here only)."""

    warmup: int = Field(10, ge=0, description="untimed calls before each timed block")
    min_iterations: int = Field(50, ge=1, description="timed calls per artifact and batch size, at least")
    min_seconds: float = Field(1.0, ge=0, description="timed seconds per artifact and batch size, at least")
    max_iterations: int = Field(5000, ge=1, description="timed calls per artifact and batch size, at most")
    rounds: int = Field(2, ge=1, description="alternating rounds over the artifacts, to spread machine noise")

    @classmethod
    def for_compress(cls) -> "TimingSettings":
        """The longer timing `edgemm compress` uses for the speed-up its gate reads."""
        return cls(warmup=20, min_iterations=100, min_seconds=2.0, rounds=3)

    def per_round(self) -> "TimingSettings":
        """One round's share of the minimum and maximum counts and of the duration."""
        return self.model_copy(update={"min_iterations": max(1, self.min_iterations // self.rounds),
                                       "max_iterations": max(1, self.max_iterations // self.rounds),
                                       "min_seconds": self.min_seconds / self.rounds, "rounds": 1})


class Latency(BaseModel):
    """Per-call wall-clock latencies of one (artifact, backend, batch size), in milliseconds.

    Only the raw samples are data; every statistic is computed from them (and written to
    the JSON for readers that do not recompute), so a loaded report renders the same figures.
    """

    model_config = ConfigDict(extra="ignore")  # statistics in a loaded report are recomputed, not trusted

    batch_size: int = Field(ge=1)
    warmup: int = 0
    samples_ms: list[float] = Field(min_length=1, repr=False)
    device_samples_ms: list[float] = Field(default_factory=list, repr=False,
                                           description="device time of the same timed calls (GPU sessions)")
    inputs: str | None = Field(None, description="where the timed feed came from (dataset split, or generated)")
    sizes: dict[str, int] = Field(default_factory=dict, description="size of each named axis in the timed feed")

    @field_serializer("samples_ms", "device_samples_ms")
    def _rounded(self, samples: list[float]) -> list[float]:
        return [round(s, 5) for s in samples]

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @computed_field
    @property
    def count(self) -> int:
        return len(self.samples_ms)

    @computed_field
    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @computed_field
    @property
    def p90_ms(self) -> float:
        return self.percentile(90)

    @computed_field
    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @computed_field
    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.samples_ms))

    @computed_field
    @property
    def std_ms(self) -> float:
        return float(np.std(self.samples_ms))

    @computed_field
    @property
    def p50_ci95_ms(self) -> tuple[float, float]:
        return percentile_ci(self.samples_ms, 50)

    @computed_field
    @property
    def p90_ci95_ms(self) -> tuple[float, float]:
        return percentile_ci(self.samples_ms, 90)

    @computed_field
    @property
    def noisy(self) -> bool:
        """The p50's 95 % confidence interval is wider than ±5 %."""
        return relative_half_width(self.samples_ms, 50) > NOISE_THRESHOLD

    @computed_field
    @property
    def throughput_per_s(self) -> float:
        """Items per second at this batch size (from the mean latency)."""
        return self.batch_size * 1000.0 / self.mean_ms

    @computed_field
    @property
    def device_p50_ms(self) -> float | None:
        return float(np.percentile(self.device_samples_ms, 50)) if self.device_samples_ms else None


def measure(fn: Callable[[], object], settings: TimingSettings,
            on_timed_start: Callable[[], None] | None = None) -> list[float]:
    """Warm up, then time until both the minimum count and the minimum duration are reached.

    ``on_timed_start`` runs between warm-up and the first timed call (device timers start there).
    Returns the per-call wall-clock times in milliseconds.
    """
    for _ in range(settings.warmup):
        fn()
    if on_timed_start is not None:
        on_timed_start()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < settings.max_iterations and (
            len(samples) < settings.min_iterations or time.perf_counter() - started < settings.min_seconds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples
