"""``edgemm bench``: latency, accuracy and size of artifacts on the same inputs and eval split."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgemm.bench.breakdown import can_break_down, modality_breakdown
from edgemm.export.profiles import available_profiles, load_profile
from edgemm.bench.cost import engine_precision, gemm_peaks, onnx_flops, onnx_precision, torch_flops, torch_precision
from edgemm.bench.guards import warnings_for
from edgemm.bench.latency import Latency, TimingSettings, measure
from edgemm.bench.profile import profile_onnx
from edgemm.bench.schema import BenchReport, BenchSettings, Machine, Result, result_id
from edgemm.data.datasets import load_split
from edgemm.environment import machine_info, peak_rss_mb, rss_mb
from edgemm.errors import ConfigError, InputError
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel, resolve_model, with_data
from edgemm.runtime import Session, default_backend, fidelity, load_session, task_outputs, torch_threads
from edgemm.runtime.evaluate import accuracy_of
from edgemm.runtime.memory import check_batch_fits
from edgemm.runtime.session import BACKENDS

onnx = lazy_import("onnx")
ProgressFn = Callable[[str], None]


@dataclass
class BenchTarget:
    """One artifact on one backend, while it is being measured."""

    model: LoadedModel
    session: Session
    name: str
    sha256: str
    dataset: str | None = None  # scored and fed from this data source (default: the contract's dataset)
    feeds: dict[int, tuple[dict[str, np.ndarray], str]] = field(default_factory=dict, repr=False)  # batch -> (feed, origin)
    samples: dict[int, list[float]] = field(default_factory=dict)
    device_samples: dict[int, list[float]] = field(default_factory=dict)
    warmup: dict[int, int] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # task outputs per split
    result: Result | None = None

    @property
    def backend(self) -> str:
        return self.session.backend

    @property
    def label(self) -> str:
        return f"{self.name} on {self.backend}"


def default_name(model: LoadedModel) -> str:
    """Model name plus, for ONNX files, the two folders above the file: variants of one model differ there."""
    if model.onnx_path is None:
        return model.spec.name
    folders = Path(model.source).parent.parts[-2:]
    return f"{model.spec.name} ({'/'.join(folders)})" if folders else model.spec.name


def _unique_names(models: list[LoadedModel], digests: list[str], labels: Sequence[str] | None) -> list[str]:
    if labels is not None and len(labels) != len(models):
        raise ConfigError(f"{len(labels)} label(s) for {len(models)} artifact(s)", "give one --label per artifact")
    names = list(labels) if labels is not None else [default_name(m) for m in models]
    for i, name in enumerate(names):
        clashes = [j for j, other in enumerate(names) if other == name and digests[j] != digests[i]]
        if clashes and labels is not None:
            raise ConfigError(f"label {name!r} is given to different artifacts", "give each artifact its own label")
        if clashes:  # same display name, different bytes: the short hash tells them apart
            names = [f"{n} [{digests[j][:6]}]" if j in clashes or j == i else n for j, n in enumerate(names)]
    return names


def load_targets(refs: list[str], backends: list[str] | None, threads: int,
                 labels: Sequence[str] | None = None, dataset: str | None = None) -> list[BenchTarget]:
    models = [resolve_model(ref) for ref in refs]
    digests = [m.sha256() for m in models]
    names = _unique_names(models, digests, labels)
    targets: list[BenchTarget] = []
    for model, digest, name in zip(models, digests, names):
        for backend in backends or [default_backend(model)]:
            if any(t.sha256 == digest and t.backend == backend for t in targets):
                raise ConfigError(f"{model.source} on {backend} is already in this run (same artifact bytes)",
                                  "give each artifact once")
            before = rss_mb()
            session = load_session(model, backend, threads, profile_options(model, backend))
            target = BenchTarget(model, session, name, digest, with_data(model, dataset).spec.dataset)
            target.result = _describe(target)
            target.result.runtime_options = dict(session.options_used)
            target.result.memory["load_rss_mb"] = round(rss_mb() - before, 2)
            targets.append(target)
    return targets


def profile_options(model: LoadedModel, backend: str) -> Any:
    """The ONNX Runtime options of the profile an ONNX artifact was exported with (its ``edgemm.profile``
    metadata), so a deployment is timed as it will run; None (the backend's defaults) otherwise."""
    if model.onnx_path is None or not backend.startswith("ort"):
        return None
    props = {p.key: p.value for p in onnx.load(str(model.onnx_path), load_external_data=False).metadata_props}
    name = props.get("edgemm.profile")
    return load_profile(name).ort if name in available_profiles() else None


def _describe(target: BenchTarget) -> Result:
    model = target.model
    onnx_path = model.onnx_path
    if model.engine_path is not None:  # a TensorRT engine: what TensorRT reports about itself
        return Result(
            id=result_id(target.sha256, target.backend), name=target.name, artifact=model.source,
            artifact_sha256=target.sha256, kind=model.kind, model=model.spec.name, backend=target.backend,
            precision=engine_precision(model.engine_path), size_bytes=target.session.artifact_bytes,
            trained=model.trained, engine_layers=target.session.layer_information())
    return Result(
        id=result_id(target.sha256, target.backend), name=target.name, artifact=model.source,
        artifact_sha256=target.sha256, kind=model.kind, model=model.spec.name, backend=target.backend,
        precision=onnx_precision(onnx_path) if onnx_path else torch_precision(model.module),
        parameters=model.parameter_count() if model.module is not None else _onnx_parameter_count(onnx_path),
        size_bytes=target.session.artifact_bytes, trained=model.trained)


def _onnx_parameter_count(path: Path) -> int | None:
    """Weights in the graph: every initialiser except shape constants and Q/DQ scales/zero points."""
    graph = onnx.load(str(path), load_external_data=False).graph
    qparams = {name for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
               for name in node.input[1:]}
    weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32}
    return int(sum(np.prod(i.dims, dtype=np.int64) for i in graph.initializer
                   if i.data_type in weight_types and i.name not in qparams and len(i.dims) > 0))


def latency_inputs(model: LoadedModel, batch_size: int, split: str | None,
                   dataset: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The feed timed at ``batch_size`` and where it came from: real samples from the eval split when
    there is a dataset with enough of them, else inputs generated from the contract."""
    spec, dataset = model.spec, dataset or model.spec.dataset
    if dataset and split:
        data = load_split(dataset, split, spec).for_inputs(spec.input_names)
        if len(data) >= batch_size:  # timed at the batch's own text length, not the split's longest
            return data.head(batch_size).trimmed(spec).inputs, f"{dataset}/{split}[:{batch_size}]"
        if len(data):  # a batch larger than the split: its samples repeated, still real data
            rows = np.arange(batch_size) % len(data)
            return data.take(rows).trimmed(spec).inputs, f"{dataset}/{split} ({len(data)} samples repeated)"
    return spec.example_inputs({"batch": batch_size}, seed=0), "generated from the contract (opt sizes)"


def prepare_feeds(targets: list[BenchTarget], batch_sizes: Sequence[int], split: str | None) -> None:
    """Every feed, checked against its contract before anything is timed (a batch beyond the axis range fails here)."""
    for target in targets:
        check_batch_fits(target.model, batch_sizes)
        for batch_size in batch_sizes:
            feed, origin = latency_inputs(target.model, batch_size, split, target.dataset)
            try:
                target.model.spec.check_inputs(feed)
            except InputError as err:
                raise InputError(f"batch size {batch_size} for {target.name}: {err.args[0]}",
                                 "bench batch sizes inside the contract's axis ranges (`edgemm info MODEL`)") from None
            target.feeds[batch_size] = feed, origin


def score(targets: list[BenchTarget], splits: Sequence[str], say: ProgressFn) -> None:
    """Accuracy per split, and fidelity of every target to the first on the same samples."""
    for target in targets:
        spec, result = target.model.spec, target.result
        if not target.dataset or spec.task.kind != "classification":
            continue
        say(f"accuracy: {target.label}")
        for split in splits:
            data = load_split(target.dataset, split, spec).for_inputs(spec.input_names)
            target.outputs[split] = task_outputs(target.session, data)
            result.accuracy[split] = accuracy_of(target.outputs[split], data, target.model.spec.name)
    reference = targets[0]
    for target in targets[1:]:
        for split, out in target.outputs.items():
            ref = reference.outputs.get(split)
            if ref is not None and ref.shape == out.shape:
                agree = fidelity(ref, out)
                target.result.fidelity.update({f"{k}_{split}": v for k, v in agree.items()})


def time_all(targets: list[BenchTarget], batch_sizes: Sequence[int], timing: TimingSettings, say: ProgressFn) -> None:
    """Every target at every batch size, alternating targets over rounds to spread machine noise."""
    per_round = timing.per_round()
    for batch_size in batch_sizes:
        for round_ in range(timing.rounds):
            for target in targets:
                feed = target.feeds[batch_size][0]
                say(f"latency: {target.label} batch {batch_size} round {round_ + 1}/{timing.rounds}")
                session = target.session
                samples = measure(lambda: session.run(feed), per_round, on_timed_start=session.start_timing)
                device = session.stop_timing()
                target.samples.setdefault(batch_size, []).extend(samples)
                target.device_samples.setdefault(batch_size, []).extend(device.get("device_ms", []))
                target.warmup[batch_size] = target.warmup.get(batch_size, 0) + per_round.warmup
                if "peak_memory_mb" in device:
                    memory = target.result.memory
                    memory["device_peak_mb"] = max(memory.get("device_peak_mb", 0.0), device["peak_memory_mb"])


def run_bench(refs: list[str], *, backends: list[str] | None = None, batch_sizes: Sequence[int] = (1, 16),
              threads: int | None = None, splits: Sequence[str] = ("test",), timing: TimingSettings | None = None,
              breakdown: bool = False, profile: bool = False, labels: Sequence[str] | None = None, dataset: str | None = None,
              progress: ProgressFn | None = None) -> BenchReport:
    """Bench every artifact on every backend; the report keeps raw samples and says where it was measured.

    ``dataset`` scores and feeds every artifact from that data source instead of its contract's dataset.
    """
    timing = timing or TimingSettings()
    threads = threads or os.cpu_count() or 1
    say = progress or (lambda _msg: None)
    for name in backends or []:
        BACKENDS.get(name)  # an unknown or unusable backend fails before any model is loaded
    with torch_threads(threads):
        targets = load_targets(list(refs), backends, threads, labels, dataset)
        if profile and not any(t.model.onnx_path is not None and t.backend == "ort-cpu" for t in targets):
            raise ConfigError("--profile runs ONNX Runtime's profiler, and none of these runs on ort-cpu",
                              "bench an .onnx file (edgemm export writes one)")
        if breakdown and not any(can_break_down(t.model) for t in targets):  # before minutes of timing
            raise ConfigError("--breakdown times the towers of PyTorch models, and none of these is one",
                              "add the PyTorch model (run directory or module:factory) beside the ONNX file, "
                              "or drop --breakdown")
        prepare_feeds(targets, batch_sizes, splits[0] if splits else None)
        score(targets, splits, say)
        time_all(targets, batch_sizes, timing, say)
        say("machine peaks: fp32 and int8 GEMM micro-benchmarks")
        peaks = dict(gemm_peaks(threads))
        results = [_finish(t, peaks) for t in targets]
        if profile:  # ONNX Runtime's profiler, per op type and tower, at the smallest batch
            for target, result in zip(targets, results):
                if target.model.onnx_path is not None and target.backend == "ort-cpu":
                    say(f"ONNX Runtime profile: {target.label}")
                    result.profile = profile_onnx(target.model, target.feeds[min(batch_sizes)][0], threads)
        if breakdown:  # the PyTorch towers on the CPU, once per model
            done: set[str] = set()
            for target, result in zip(targets, results):
                if target.session.device == "cpu" and can_break_down(target.model) and target.sha256 not in done:
                    say(f"per-modality breakdown: {target.label}")
                    result.breakdown = modality_breakdown(target.model, timing, threads)
                    done.add(target.sha256)
    machine = Machine(**machine_info(threads), peak_gops=peaks, peak_rss_mb=round(peak_rss_mb(), 1))
    settings = BenchSettings(batch_sizes=list(batch_sizes), threads=threads, splits=list(splits), timing=timing)
    return BenchReport(machine=machine, settings=settings, results=results, warnings=warnings_for(results))


def _finish(target: BenchTarget, peaks: dict[str, float]) -> Result:
    result = target.result
    spec = target.model.spec
    result.latency = [Latency(batch_size=b, warmup=target.warmup[b], samples_ms=s,
                              device_samples_ms=target.device_samples.get(b, []), inputs=target.feeds[b][1],
                              sizes=spec.check_inputs(target.feeds[b][0]))
                      for b, s in sorted(target.samples.items())]
    if target.model.engine_path is None:
        # At the sizes of the batch the efficiency reads (a caption's 12 tokens, not the contract's opt 32: counted
        # at opt, MiniLM read 186 % of the fp32 peak); at opt sizes when nothing was timed.
        sizes, model = (result.latency[-1].sizes if result.latency else None), target.model
        result.flops_per_item = (onnx_flops(model.onnx_path, spec, sizes) if model.onnx_path
                                 else torch_flops(model.module, spec, sizes))
    peak = peaks.get(result.precision) if target.session.device == "cpu" else None  # the peaks are the CPU's
    if result.flops_per_item and peak and result.latency:
        result.efficiency = result.flops_per_item * result.latency[-1].throughput_per_s / (peak * 1e9)
        result.peak_precision = result.precision
    return result
