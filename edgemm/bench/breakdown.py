"""End-to-end multimodal latency, split where the time goes: per-modality preprocessing
(image resize, audio to log-mel, tokenisation), each tower, and the fusion head (batch 1).

Works for fusion models that expose a ``towers`` ModuleDict and a ``head`` (the demo and
any model built the same way) on a dataset that registers raw samples and preprocessors.
"""
from __future__ import annotations

from edgemm.bench.latency import TimingSettings, measure
from edgemm.errors import EdgemmError
from edgemm.models.registry import LoadedModel


def modality_breakdown(model: LoadedModel, timing: TimingSettings, threads: int | None = None) -> dict:
    import torch

    from edgemm.data import digits

    module, spec = model.module, model.spec
    if module is None or not hasattr(module, "towers") or not hasattr(module, "head"):
        raise EdgemmError(f"{model.source}: a breakdown needs a PyTorch fusion model with 'towers' and 'head'",
                          "use the model's run directory or factory, not its ONNX file")
    if spec.dataset != digits.NAME:
        raise EdgemmError(f"no raw-sample preprocessors registered for dataset {spec.dataset!r}",
                          "register raw samples and preprocessors for the dataset")
    if threads:
        torch.set_num_threads(threads)
    raw = digits.raw_sample()
    stages: dict[str, dict] = {}
    inputs, embeddings = {}, {}
    with torch.inference_mode():
        for name in spec.input_names:
            prep = digits.PREPROCESSORS[name]
            stages[f"preprocess:{name}"] = measure(lambda: prep(raw[name]), 1, timing).summary()
            inputs[name] = torch.from_numpy(prep(raw[name]))
        for name, tower in module.towers.items():
            stages[f"tower:{name}"] = measure(lambda: tower(inputs[name]), 1, timing).summary()
            embeddings[name] = tower(inputs[name])
        fused = torch.cat([embeddings[n] for n in module.towers], dim=1)
        stages["fusion head"] = measure(lambda: module.head(fused), 1, timing).summary()
        ordered = [inputs[n] for n in spec.input_names]

        def end_to_end():
            return module(*[torch.from_numpy(digits.PREPROCESSORS[n](raw[n])) for n in spec.input_names])

        stages["end to end"] = measure(end_to_end, 1, timing).summary()
        stages["model only"] = measure(lambda: module(*ordered), 1, timing).summary()
    parts = sum(v["p50_ms"] for k, v in stages.items() if k not in ("end to end", "model only"))
    return {"model": spec.name, "stages": stages, "sum_of_parts_p50_ms": parts}


def breakdown_markdown(result: dict) -> str:
    total = result["stages"]["end to end"]["p50_ms"]
    rows = [f"| {name} | {s['p50_ms']:.3f} | {s['p90_ms']:.3f} | {100 * s['p50_ms'] / total:.0f} % |"
            for name, s in result["stages"].items()]
    return ("| stage (batch 1) | p50 ms | p90 ms | share of end to end |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nSum of the parts' p50: {result['sum_of_parts_p50_ms']:.3f} ms.\n")
