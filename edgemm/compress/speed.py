"""Speed-aware fallback: int8 is kept only where it pays.

After the accuracy fallback has found a graph that meets the gate, each tower still in int8 is tried in
float: the graph with that tower's Conv/MatMul/Gemm kept float is timed against the current graph
(ONNX Runtime CPU, 1 thread, calls alternated one by one, medians) at each of the stage's batch sizes.
A tower whose int8 is less than ``min_speedup`` faster at any of them (ModelOpt's ONNX autotune keeps
Q/DQ at >= 1.02x) goes back to float: its Q/DQ only cost time (int8<->float transitions around small ops). A final comparison keeps the
starting graph only if its extra int8 pays by the same margin (one-tower comparisons can drift with
machine noise). The same rule decides int8 vs fp16 for TensorRT on the device (the bundle's script).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from pydantic import Field

from edgemm.config import Strict
from edgemm.data.datasets import Split
from edgemm.errors import ConfigError
from edgemm.lazy import lazy_import

ort = lazy_import("onnxruntime")

if TYPE_CHECKING:
    from edgemm.spec import ModelSpec

QuantizeFn = Callable[[Path, list[str]], Path]  # (output path, nodes kept in float) -> quantized graph
TimePair = Callable[[Path, Path], tuple[float, float]]  # two graphs -> their median latencies (ms)


class SpeedSettings(Strict):
    """The ``speed:`` key of a quantize stage."""

    enabled: bool = Field(True, description="time each int8 tower against float and keep int8 only where it pays")
    min_speedup: float = Field(1.02, ge=1.0, description="int8 must be at least this much faster than float")
    batch_sizes: list[int] = Field([1], min_length=1, description=(
        "batch sizes the towers are timed at; int8 must pay at every one (edge: [1]; throughput too: [1, 16])"))
    seconds: float = Field(1.0, gt=0, description="timed seconds per graph and comparison")


@dataclass
class TowerSpeed:
    tower: str
    int8_ms: float
    float_ms: float
    kept: str  # "int8" or "float"

    @property
    def speedup(self) -> float:
        return self.float_ms / self.int8_ms


def keep_int8_where_it_pays(path: Path, kept: list[str], groups: dict[str, list[str]], quantize: QuantizeFn,
                            work_dir: Path, settings: SpeedSettings, time_pair: TimePair,
                            log: Callable[[str], None] = lambda _m: None) -> tuple[Path, list[str], list[TowerSpeed]]:
    """Each tower with int8 nodes, largest first, tried in float; returns the graph, the nodes kept in float
    and what was measured per tower."""
    decisions: list[TowerSpeed] = []
    start, start_kept, kept = path, list(kept), list(kept)
    int8_towers = [t for t in sorted(groups, key=lambda t: -len(groups[t])) if set(groups[t]) - set(kept)]
    for tower in int8_towers:
        trial = quantize(work_dir / f"speed-{tower}.onnx", sorted(set(kept) | set(groups[tower])))
        int8_ms, float_ms = time_pair(path, trial)
        pays = float_ms / int8_ms >= settings.min_speedup
        decisions.append(TowerSpeed(tower, int8_ms, float_ms, "int8" if pays else "float"))
        log(f"speed '{tower}': int8 {int8_ms:.3f} ms vs float {float_ms:.3f} ms ({float_ms / int8_ms:.3f}x): "
            + ("int8 pays" if pays else f"below {settings.min_speedup}x, kept in float"))
        if not pays:
            path, kept = trial, sorted(set(kept) | set(groups[tower]))
    if path != start:  # one tower at a time can drift with machine noise: the start's extra int8 must pay too
        start_ms, end_ms = time_pair(start, path)
        if end_ms / start_ms >= settings.min_speedup:
            log(f"speed: the float placements together ran {end_ms:.3f} ms vs {start_ms:.3f} ms: keeping int8 there")
            return start, start_kept, [TowerSpeed(d.tower, d.int8_ms, d.float_ms, "int8") for d in decisions]
    return path, kept, decisions


def ort_time_pair(feeds: list[dict[str, np.ndarray]], seconds: float) -> TimePair:
    """Median latencies of two graphs on ONNX Runtime CPU, 1 thread, timed call by call in alternation so
    machine noise falls on both, at each feed's batch size; returns the pair where the first graph's lead
    is smallest (so "the first pays" means it pays at every batch size)."""

    def session(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def medians(sessions, feed: dict[str, np.ndarray]) -> tuple[float, float]:
        samples: tuple[list[float], list[float]] = ([], [])
        for s in sessions:
            s.run(None, feed)  # warm-up: first-call allocations and pre-packing
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(samples[0]) < 5:  # call by call, A B A B: drift falls on both
            for s, out in zip(sessions, samples):
                begin = time.perf_counter()
                s.run(None, feed)
                out.append(1000 * (time.perf_counter() - begin))
        return float(np.median(samples[0])), float(np.median(samples[1]))

    def time_pair(a: Path, b: Path) -> tuple[float, float]:
        sessions = (session(a), session(b))
        return min((medians(sessions, feed) for feed in feeds), key=lambda pair: pair[1] / pair[0])

    return time_pair


def batch_feeds(feeds: list[dict[str, np.ndarray]], batch_sizes: list[int], spec: "ModelSpec") -> list[dict[str, np.ndarray]]:
    """Real inputs of every modality at each batch size, from the first calibration batches (the config
    checks there are enough samples), with text cut to the batch's own longest as bench and deployment
    run it (calibration pads it to the split's longest)."""
    needed, taken = max(batch_sizes), []
    for feed in feeds:
        taken.append(feed)
        if sum(len(next(iter(f.values()))) for f in taken) >= needed:
            break
    merged = {name: np.concatenate([f[name] for f in taken]) for name in feeds[0]}
    rows = len(next(iter(merged.values())))
    if rows < needed:  # the split had fewer rows than calibration_samples asked for
        raise ConfigError(f"speed.batch_sizes times batch {needed}, and the calibration split has {rows} samples",
                          "lower speed.batch_sizes, or calibrate on a larger split")
    split = Split("speed", merged, np.zeros(rows))
    return [split.head(size).trimmed(spec).inputs for size in batch_sizes]


def to_dict(decisions: list[TowerSpeed]) -> list[dict]:
    return [{**asdict(d), "speedup": round(d.speedup, 3)} for d in decisions]
