"""End-to-end multimodal latency, split where the time goes: per-modality preprocessing
(image resize, audio to log-mel, tokenisation...), each tower, and the fusion head (batch 1).

Works for fusion models that expose a ``towers`` ModuleDict and a ``head`` (the demo and
any model built the same way) on any data source that offers raw samples and preprocessors.
"""
from __future__ import annotations

from edgemm.bench.latency import Latency, TimingSettings, measure
from edgemm.bench.schema import Breakdown
from edgemm.data.datasets import find_source
from edgemm.errors import EdgemmError
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel
from edgemm.runtime.threads import torch_threads

torch = lazy_import("torch")


def can_break_down(model: LoadedModel) -> bool:
    module = model.module
    return module is not None and hasattr(module, "towers") and hasattr(module, "head")


def modality_breakdown(model: LoadedModel, timing: TimingSettings, threads: int | None = None) -> Breakdown:
    module, spec = model.module, model.spec
    if not can_break_down(model):
        raise EdgemmError(f"{model.source}: a breakdown needs a PyTorch fusion model with 'towers' and 'head'",
                          "use the model's run directory or factory, not its ONNX file")
    source = find_source(spec.dataset) if spec.dataset else None
    raw = source.raw_sample() if source else None
    prep = source.preprocessors if source else None
    if raw is None or not prep or any(name not in prep for name in spec.input_names):
        raise EdgemmError(f"dataset {spec.dataset!r} offers no raw samples and preprocessors for "
                          f"{spec.input_names}", "give the data source raw_sample() and preprocessors")

    def timed(fn) -> Latency:
        return Latency(batch_size=1, warmup=timing.warmup, samples_ms=measure(fn, timing))

    stages: dict[str, Latency] = {}
    inputs, embeddings = {}, {}
    with torch_threads(threads), torch.inference_mode():
        for name in spec.input_names:
            stages[f"preprocess:{name}"] = timed(lambda: prep[name](raw[name]))
            inputs[name] = torch.from_numpy(prep[name](raw[name]))
        for name, tower in module.towers.items():
            stages[f"tower:{name}"] = timed(lambda: tower(inputs[name]))
            embeddings[name] = tower(inputs[name])
        fused = torch.cat([embeddings[n] for n in module.towers], dim=1)
        stages["fusion head"] = timed(lambda: module.head(fused))
        ordered = [inputs[n] for n in spec.input_names]
        stages["end to end"] = timed(lambda: module(*[torch.from_numpy(prep[n](raw[n])) for n in spec.input_names]))
        stages["model only"] = timed(lambda: module(*ordered))
    return Breakdown(model=spec.name, stages=stages)


def breakdown_markdown(result: Breakdown) -> str:
    total = result.stages["end to end"].p50_ms
    rows = [f"| {name} | {s.p50_ms:.3f} | {s.p90_ms:.3f} | {100 * s.p50_ms / total:.0f} % |"
            for name, s in result.stages.items()]
    return ("| stage (batch 1) | p50 ms | p90 ms | share of end to end |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nSum of the parts' p50: {result.sum_of_parts_p50_ms:.3f} ms.\n")
