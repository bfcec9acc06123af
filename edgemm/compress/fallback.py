"""Accuracy-aware quantization: quantize, measure, keep the most sensitive parts in float, retry.

Order of retreat: whole towers (ranked by the accuracy lost when only that tower
is quantized), then single nodes of the towers that lose accuracy (ranked by ONNX
Runtime's QDQ debugging tools: the signal-to-quantization-noise ratio of each
node's output). Stops when the
gate holds or the recipe's budget of tries is spent; never returns a model that
missed the gate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field

from edgemm.models.graph_towers import nodes_by_tower
from edgemm.config import Strict
from edgemm.errors import ConfigError, GateFailed
from edgemm.lazy import lazy_import

onnx = lazy_import("onnx")
qdq_debug = lazy_import("onnxruntime.quantization.qdq_loss_debug")
QuantizeFn = Callable[[Path, list[str]], Path]  # (output path, nodes kept in float) -> the quantized ONNX file


class FallbackSettings(Strict):
    """The ``fallback:`` key of a quantize stage: how far the loop may retreat to float."""

    max_tries: int = Field(4, ge=0, description="quantize-evaluate rounds after the first, each keeping more in float")
    granularity: list[Literal["tower", "node"]] = Field(default_factory=lambda: ["tower", "node"])
    nodes_per_try: int = Field(4, ge=1)


@dataclass
class Attempt:
    label: str
    kept_float: list[str]
    accuracy: float
    passed: bool
    kind: str = "try"  # "try" or "sensitivity" (a measurement, not a candidate)


@dataclass
class QuantizeOutcome:
    path: Path
    accuracy: float
    attempts: list[Attempt] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    kept_float: list[str] = field(default_factory=list)  # nodes of ``path`` kept in float

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "sensitivity": self.sensitivity,
                "attempts": [asdict(a) for a in self.attempts]}


def quantize_with_fallback(fp32: Path, graph: Path, work_dir: Path, quantize: QuantizeFn, op_types: list[str],
                           keep_float: list[str], settings: FallbackSettings, feeds: list[dict[str, np.ndarray]],
                           evaluate: Callable[[Path], float], min_accuracy: float,
                           log: Callable[[str], None] = lambda _m: None,
                           tower_of: dict[str, str] | None = None) -> QuantizeOutcome:
    """Quantize ``fp32`` (whose nodes are named as in ``graph``, the quantizer's pre-processed copy) until
    ``evaluate`` reaches ``min_accuracy``: towers in ``keep_float`` stay float from the start."""
    groups = nodes_by_tower(onnx.load(str(graph)), op_types, tower_of)
    unknown = [t for t in keep_float if t not in groups]
    if unknown:
        raise ConfigError(f"quantize.keep_float names {unknown}, which are not towers with quantizable nodes",
                          f"the towers here are {sorted(groups)}")
    attempts: list[Attempt] = []
    written: dict[int, Path] = {}  # attempt index -> its graph

    def attempt(kept: list[str], label: str, kind: str = "try") -> tuple[Path, float]:
        path = quantize(work_dir / f"{kind}{len(attempts)}.onnx", sorted(set(kept)))
        acc = evaluate(path)
        written[len(attempts)] = path
        attempts.append(Attempt(label, sorted(set(kept)), acc, acc >= min_accuracy, kind))
        log(f"{kind} '{label}': accuracy {100 * acc:.2f} % (needs ≥ {100 * min_accuracy:.2f} %)")
        return path, acc

    kept = [n for tower in keep_float for n in groups.get(tower, [])]
    path, acc = attempt(kept, "quantize all" if not kept else f"keep {keep_float} in float")
    tries, sensitivity = 0, {}
    float_accuracy = evaluate(fp32) if acc < min_accuracy else None
    if float_accuracy is not None and float_accuracy < min_accuracy:  # no int8 placement can fix this
        raise GateFailed(f"the float model entering quantize already misses the gate: {100 * float_accuracy:.2f} % "
                         f"< required {100 * min_accuracy:.2f} %", "the loss is upstream: prune or resize less, "
                         "distill longer, or give that stage a max_accuracy_drop so it stops there")
    candidates = [t for t in groups if t not in keep_float]

    def measure_sensitivity() -> None:
        for tower in candidates:  # accuracy lost when only this tower is quantized
            others = [n for t in groups if t != tower for n in groups[t]]
            _, only = attempt(others, f"only {tower} quantized", "sensitivity")
            sensitivity[tower] = float(float_accuracy - only)

    if acc < min_accuracy and "tower" in settings.granularity and settings.max_tries:
        measure_sensitivity()
        for tower in sorted(candidates, key=lambda t: -sensitivity[t]):
            if acc >= min_accuracy or tries >= settings.max_tries:
                break
            kept += groups[tower]
            path, acc = attempt(kept, f"keep tower {tower} in float")
            tries += 1
    if acc < min_accuracy and "node" in settings.granularity:
        if not sensitivity and len(candidates) > 1 and settings.max_tries:
            measure_sensitivity()
        # Nodes of the towers whose int8 costs accuracy: the error ranking alone is global, and on the real model
        # it named MiniLM's MatMuls first while the loss was the image tower's (the first tries changed nothing).
        lossy = {n for t, lost in sensitivity.items() if lost > 0 for n in groups[t]}
        ranked = [n for n in rank_nodes_by_error(graph, path, probe_feeds(feeds), op_types)
                  if n not in kept and (n in lossy or not lossy)]
        while acc < min_accuracy and tries < settings.max_tries and ranked:
            batch, ranked = ranked[:settings.nodes_per_try], ranked[settings.nodes_per_try:]
            kept += batch
            path, acc = attempt(kept, f"keep nodes {batch} in float")
            tries += 1
    if acc < min_accuracy:  # a sensitivity measurement (one tower int8) that passed is a placement too
        passed = [i for i, a in enumerate(attempts) if a.kind == "sensitivity" and a.passed]
        if passed:  # the one that keeps the fewest nodes in float
            best = min(passed, key=lambda i: len(attempts[i].kept_float))
            path, acc, kept = written[best], attempts[best].accuracy, list(attempts[best].kept_float)
            log(f"keeping '{attempts[best].label}': the retreat did not reach the gate, this measured placement did")
    outcome = QuantizeOutcome(path, acc, attempts, sensitivity, sorted(set(kept)))
    if acc < min_accuracy:
        raise GateFailed(_failure_text(outcome, min_accuracy),
                         "raise fallback.max_tries, add towers to keep_float, or loosen the recipe's gate")
    return outcome


PROBE_SAMPLES = 16  # the error ranking keeps every intermediate tensor of two models: 4 batches of 32
                   # 224x224 images took a 26 M-parameter model's compress run to 23 GB and the OOM killer


def probe_feeds(feeds: list[dict[str, np.ndarray]], samples: int = PROBE_SAMPLES) -> list[dict[str, np.ndarray]]:
    """The first ``samples`` calibration samples, in one feed: what the per-node error ranking runs on."""
    taken, total = [], 0
    for feed in feeds:
        if total >= samples:
            break
        taken.append(feed)
        total += len(next(iter(feed.values())))
    if any(a.ndim >= 2 and len({f[name].shape[1:] for f in taken}) > 1 for name, a in taken[0].items()):
        taken = taken[:1]  # batches of different text lengths do not stack: the first alone
    return [{name: np.concatenate([f[name] for f in taken])[:samples] for name in taken[0]}]


def rank_nodes_by_error(fp32: Path, quantized: Path, feeds: list[dict[str, np.ndarray]],
                        op_types: list[str]) -> list[str]:
    """Quantized nodes, worst first: the lowest SQNR (float vs QDQ model) among the activations they read.

    Uses onnxruntime's own QDQ debugging tools (``qdq_loss_debug``).
    """
    float_aug, qdq_aug = fp32.with_suffix(".aug.onnx"), quantized.with_suffix(".aug.onnx")
    try:
        qdq_debug.modify_model_output_intermediate_tensors(str(fp32), str(float_aug))
        qdq_debug.modify_model_output_intermediate_tensors(str(quantized), str(qdq_aug))
        matching = qdq_debug.create_activation_matching(qdq_debug.collect_activations(str(qdq_aug), feeds),
                                                        qdq_debug.collect_activations(str(float_aug), feeds))
        errors = qdq_debug.compute_activation_error(matching)
    finally:
        float_aug.unlink(missing_ok=True)
        qdq_aug.unlink(missing_ok=True)
    worst: dict[str, float] = {}
    for node in onnx.load(str(fp32)).graph.node:
        if node.op_type in op_types:
            scores = [errors[t].get("xmodel_err", errors[t].get("qdq_err", np.inf)) for t in node.input if t in errors]
            if scores:
                worst[node.name] = float(min(scores))
    return sorted(worst, key=worst.get)


def _failure_text(outcome: QuantizeOutcome, min_accuracy: float) -> str:
    tried = "; ".join(f"{a.label} → {100 * a.accuracy:.2f} %" for a in outcome.attempts if a.kind == "try")
    return (f"quantized model misses its accuracy gate: best {100 * max(a.accuracy for a in outcome.attempts):.2f} % "
            f"< required {100 * min_accuracy:.2f} % after {sum(a.kind == 'try' for a in outcome.attempts)} tries "
            f"({tried})")
