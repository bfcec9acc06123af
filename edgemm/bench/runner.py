"""``edgemm bench``: latency, accuracy and size of artifacts on the same inputs and eval split."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm import metrics
from edgemm.bench.backends import Session, default_backend, get_backend
from edgemm.bench.latency import Latency, TimingSettings, measure
from edgemm.errors import EdgemmError
from edgemm.models.registry import LoadedModel, resolve_model
from edgemm.spec import ModelSpec

SCHEMA_VERSION = 1
ProgressFn = Callable[[str], None]


@dataclass
class BenchTarget:
    """One artifact on one backend."""

    model: LoadedModel
    backend: str
    session: Session
    latencies: dict[int, Latency] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model.spec.name} on {self.backend}"

    def parameters(self) -> int | None:
        if self.model.module is not None:
            return self.model.parameter_count()
        return _onnx_parameter_count(self.model.onnx_path)

    def to_dict(self) -> dict:
        return {"label": self.label, "artifact": self.model.source, "kind": self.model.kind,
                "model": self.model.spec.name, "backend": self.backend, "parameters": self.parameters(),
                "size_bytes": self.session.artifact_bytes, "trained": self.model.trained,
                "accuracy": self.accuracy,
                "latency": [self.latencies[b].to_dict() for b in sorted(self.latencies)]}


def _onnx_parameter_count(path: Path | None) -> int | None:
    """Weights in the graph: every initialiser except shape constants and Q/DQ scales/zero points."""
    if path is None:
        return None
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    qparams = {name for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
               for name in node.input[1:]}
    weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32}
    return int(sum(np.prod(i.dims, dtype=np.int64) for i in graph.initializer
                   if i.data_type in weight_types and i.name not in qparams and len(i.dims) > 0))


def load_targets(refs: list[str], backends: list[str] | None, threads: int) -> list[BenchTarget]:
    targets = []
    for ref in refs:
        model = resolve_model(ref)
        for name in backends or [default_backend(model)]:
            backend = get_backend(name)
            if not backend.accepts(model):
                raise EdgemmError(f"backend {name!r} cannot run {ref} ({model.kind} model)",
                                  "give an .onnx artifact for ONNX Runtime backends (`edgemm export` makes one), "
                                  "a PyTorch model for 'torch'")
            targets.append(BenchTarget(model, name, backend.load(model, threads)))
    return targets


def latency_inputs(model: LoadedModel, batch_size: int, split: str | None) -> dict[str, np.ndarray]:
    """Real samples from the eval split when the model has a dataset, else generated ones."""
    from edgemm.data.datasets import load_split

    spec = model.spec
    if spec.dataset and split:
        data = load_split(spec.dataset, split).for_inputs(spec.input_names)
        if len(data) >= batch_size:
            feed = data.head(batch_size).inputs
            spec.check_inputs(feed)
            return feed
    return spec.example_inputs({"batch": batch_size}, seed=0)


def session_accuracy(session: Session, spec: ModelSpec, dataset: str, split: str, batch_size: int = 64) -> float:
    """Task accuracy of any backend session on a dataset split."""
    from edgemm.data.datasets import load_split

    data = load_split(dataset, split).for_inputs(spec.input_names)
    logits = np.concatenate([session.run(x)[spec.task.output] for x, _ in data.batches(batch_size)])
    return metrics.accuracy(logits, data.labels)


def evaluate_accuracy(target: BenchTarget, splits: list[str]) -> dict[str, float]:
    spec = target.model.spec
    if not spec.dataset or spec.task.kind != "classification":
        return {}
    return {split: session_accuracy(target.session, spec, spec.dataset, split) for split in splits}


def run_bench(refs: list[str], *, backends: list[str] | None = None, batch_sizes: tuple[int, ...] = (1, 16),
              threads: int | None = None, splits: tuple[str, ...] = ("test",), timing: TimingSettings = TimingSettings(),
              rounds: int = 2, progress: ProgressFn | None = None) -> dict:
    """Time every target at every batch size, alternating targets over ``rounds`` to spread machine noise."""
    from edgemm.environment import machine_info

    threads = threads or os.cpu_count() or 1
    targets = load_targets(refs, backends, threads)
    say = progress or (lambda _msg: None)
    for target in targets:
        say(f"accuracy: {target.label}")
        target.accuracy = evaluate_accuracy(target, list(splits))
    per_round = TimingSettings(timing.warmup, max(1, timing.min_iterations // rounds), timing.min_seconds / rounds,
                               timing.max_iterations)
    for batch_size in batch_sizes:
        feeds = [latency_inputs(t.model, batch_size, splits[0] if splits else None) for t in targets]
        for round_ in range(rounds):
            for target, feed in zip(targets, feeds):
                say(f"latency: {target.label} batch {batch_size} round {round_ + 1}/{rounds}")
                lat = measure(lambda: target.session.run(feed), batch_size, per_round)
                if batch_size in target.latencies:
                    target.latencies[batch_size].samples_ms.extend(lat.samples_ms)
                    target.latencies[batch_size].warmup += lat.warmup
                else:
                    target.latencies[batch_size] = lat
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "edgemm bench",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(threads),
        "settings": {"batch_sizes": list(batch_sizes), "threads": threads, "splits": list(splits),
                     "rounds": rounds, "timing": timing.__dict__},
        "results": [t.to_dict() for t in targets],
    }
