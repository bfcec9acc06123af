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

SCHEMA_VERSION = 2  # bump on any incompatible change to the report layout (see report.schema.json)
ProgressFn = Callable[[str], None]


@dataclass
class BenchTarget:
    """One artifact on one backend."""

    model: LoadedModel
    backend: str
    session: Session
    latencies: dict[int, Latency] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # task outputs per split
    fidelity: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    flops_per_item: int | None = None

    @property
    def variant(self) -> str:
        """Model name plus, for ONNX files, the two folders above the file: variants of one model differ there."""
        if self.model.onnx_path is None:
            return self.model.spec.name
        folders = Path(self.model.source).parent.parts[-2:]
        return f"{self.model.spec.name} ({'/'.join(folders)})" if folders else self.model.spec.name

    @property
    def label(self) -> str:
        return f"{self.variant} on {self.backend}"

    def parameters(self) -> int | None:
        if self.model.module is not None:
            return self.model.parameter_count()
        return _onnx_parameter_count(self.model.onnx_path)

    def is_int8(self) -> bool:
        if self.model.onnx_path is None:
            return False
        import onnx

        return any(n.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger")
                   for n in onnx.load(str(self.model.onnx_path), load_external_data=False).graph.node)

    def efficiency(self, peak_gflops: float | None) -> float | None:
        """Achieved FLOP/s at the largest batch as a fraction of the machine's GEMM peak (roofline)."""
        if not (self.flops_per_item and peak_gflops and self.latencies):
            return None
        return self.flops_per_item * self.latencies[max(self.latencies)].throughput / (peak_gflops * 1e9)

    def to_dict(self, peak_gflops: float | None = None) -> dict:
        return {"label": self.label, "artifact": self.model.source, "kind": self.model.kind,
                "model": self.variant, "backend": self.backend, "parameters": self.parameters(),
                "size_bytes": self.session.artifact_bytes, "trained": self.model.trained, "int8": self.is_int8(),
                "flops_per_item": self.flops_per_item, "efficiency": self.efficiency(peak_gflops),
                "memory": self.memory, "accuracy": self.accuracy, "fidelity": self.fidelity,
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
    from edgemm.bench.cost import onnx_flops, rss_mb, torch_flops

    targets = []
    for ref in refs:
        model = resolve_model(ref)
        for name in backends or [default_backend(model)]:
            backend = get_backend(name)
            if not backend.accepts(model):
                raise EdgemmError(f"backend {name!r} cannot run {ref} ({model.kind} model)",
                                  "give an .onnx artifact for ONNX Runtime backends (`edgemm export` makes one), "
                                  "a PyTorch model for 'torch'")
            before = rss_mb()
            target = BenchTarget(model, name, backend.load(model, threads))
            target.memory["load_rss_mb"] = round(rss_mb() - before, 2)
            target.flops_per_item = (onnx_flops(model.onnx_path, model.spec) if model.onnx_path
                                     else torch_flops(model.module, model.spec))
            targets.append(target)
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
    return metrics.accuracy(*task_outputs(session, spec, dataset, split, batch_size))


def task_outputs(session: Session, spec: ModelSpec, dataset: str, split: str, batch_size: int = 64):
    """The task output over a split, and its labels."""
    from edgemm.data.datasets import load_split

    data = load_split(dataset, split).for_inputs(spec.input_names)
    return np.concatenate([session.run(x)[spec.task.output] for x, _ in data.batches(batch_size)]), data.labels


def evaluate_accuracy(target: BenchTarget, splits: list[str]) -> dict[str, float]:
    """Accuracy per split; keeps the outputs so fidelity to the reference can be measured."""
    spec = target.model.spec
    if not spec.dataset or spec.task.kind != "classification":
        return {}
    scores = {}
    for split in splits:
        target.outputs[split], labels = task_outputs(target.session, spec, spec.dataset, split)
        scores[split] = metrics.accuracy(target.outputs[split], labels)
    return scores


def fidelity(reference: BenchTarget, target: BenchTarget) -> dict[str, float]:
    """Top-1 agreement and mean cosine of the task output against the first artifact, per split."""
    shared = [s for s in target.outputs if s in reference.outputs
              and target.outputs[s].shape == reference.outputs[s].shape]
    result = {}
    for split in shared:
        result[f"top1_agreement_{split}"] = metrics.top1_agreement(reference.outputs[split], target.outputs[split])
        result[f"cosine_{split}"] = metrics.mean_cosine(reference.outputs[split], target.outputs[split])
    return result


def run_bench(refs: list[str], *, backends: list[str] | None = None, batch_sizes: tuple[int, ...] = (1, 16),
              threads: int | None = None, splits: tuple[str, ...] = ("test",), timing: TimingSettings = TimingSettings(),
              rounds: int = 2, breakdown: bool = False, progress: ProgressFn | None = None) -> dict:
    """Time every target at every batch size, alternating targets over ``rounds`` to spread machine noise."""
    from edgemm.bench.cost import gemm_peak_gflops, peak_rss_mb
    from edgemm.bench.guards import warnings_for
    from edgemm.environment import machine_info

    threads = threads or os.cpu_count() or 1
    targets = load_targets(refs, backends, threads)
    say = progress or (lambda _msg: None)
    for target in targets:
        say(f"accuracy: {target.label}")
        target.accuracy = evaluate_accuracy(target, list(splits))
        target.fidelity = fidelity(targets[0], target) if target is not targets[0] else {}
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
    say("machine peak: fp32 GEMM micro-benchmark")
    machine = machine_info(threads)
    machine["peak_gflops_fp32"] = round(gemm_peak_gflops(threads), 1)
    machine["peak_rss_mb"] = round(peak_rss_mb(), 1)
    for target in targets:  # GPU sessions add device memory and CUDA-event forward times
        if hasattr(target.session, "memory"):
            target.memory.update(target.session.memory())
        if getattr(target.session, "device_ms", None):
            target.memory["device_forward_p50_ms"] = float(np.percentile(target.session.device_ms, 50))
    results = [t.to_dict(machine["peak_gflops_fp32"]) for t in targets]
    if breakdown:
        from edgemm.bench.breakdown import modality_breakdown

        for target, result in zip(targets, results):
            if target.backend == "torch" and hasattr(target.model.module, "towers"):
                say(f"per-modality breakdown: {target.label}")
                result["breakdown"] = modality_breakdown(target.model, timing, threads)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "edgemm bench",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "settings": {"batch_sizes": list(batch_sizes), "threads": threads, "splits": list(splits),
                     "rounds": rounds, "timing": timing.__dict__},
        "results": results,
        "warnings": warnings_for(results),
    }
