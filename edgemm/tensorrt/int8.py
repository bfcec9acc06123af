"""The precision of a TensorRT build lives in the ONNX graph [TRT §0]: an fp16 graph (fp32 inputs and
outputs) for fp16, symmetric Q/DQ for int8. Both are made here from the validated fp32 graph; the
int8 one is kept only within the profile's accuracy budget of the fp32 graph, measured on ONNX Runtime
(the same graph TensorRT will parse)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm.data.datasets import find_source, load_split
from edgemm.errors import EdgemmError
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel
from edgemm.runtime import load_session, task_outputs
from edgemm.runtime.evaluate import accuracy_of
from edgemm import metrics
from edgemm.spec import ModelSpec

onnx = lazy_import("onnx")

CALIBRATION_SAMPLES = 256


WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def quantized_share(path: Path) -> float:
    """Share of the weighted ops (Conv/MatMul/Gemm) whose inputs come through DequantizeLinear."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    weighted = [n for n in graph.node if n.op_type in WEIGHTED]
    return sum(any(i in dequantized for i in n.input) for n in weighted) / max(1, len(weighted))


def to_fp16(fp32: Path, out: Path) -> Path:
    """Half-precision graph with fp32 inputs/outputs (the fp16 quantizer's converter)."""
    from edgemm.compress.quantizer import QUANTIZERS  # noqa: PLC0415 - compress sits above export

    return QUANTIZERS.get("fp16").quantize(fp32, out, [], None, None, [])


def quantize_checked(model: LoadedModel, fp32: Path, out: Path, profile, notes: list[str]) -> Path | None:
    """Symmetric int8 Q/DQ with the profile's scheme, calibrated on the model's data, with the compress
    stage's accuracy-aware fallback (sensitive towers, then nodes, kept in float) until the graph is within
    ``tensorrt.int8_max_accuracy_drop`` of fp32. None, with the reason in ``notes``, when there is no data
    or no try meets the budget."""
    from edgemm.compress.calibration import calibration_feeds  # noqa: PLC0415 - compress sits above export
    from edgemm.compress.fallback import FallbackSettings, quantize_with_fallback  # noqa: PLC0415
    from edgemm.compress.quantizer import QUANTIZERS  # noqa: PLC0415
    from edgemm.compress.quantizers.ort import OrtQuantizeConfig  # noqa: PLC0415

    spec, budget = model.spec, profile.section("tensorrt").int8_max_accuracy_drop
    if spec.dataset is None:
        notes.append("int8 dropped: no data to calibrate on (pass --data); fp16 ships")
        return None
    work = out.parent / "int8-work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        split = "train" if "train" in find_source(spec.dataset).splits_for(spec.dataset) else profile.validation.split
        feeds = calibration_feeds(spec, spec.dataset, split, CALIBRATION_SAMPLES)
        quantizer, config = QUANTIZERS.get("ort"), OrtQuantizeConfig(stage="quantize", backend="ort", mode="static")
        score, what = _scorer(fp32, spec, profile.validation)
        reference = score(fp32)
        outcome = quantize_with_fallback(
            fp32, quantizer.prepare(fp32, work), work,
            lambda path, keep: quantizer.quantize(fp32, path, feeds, profile.quantization, config, keep),
            profile.quantization.op_types, [], FallbackSettings(), feeds, score, reference - budget,
            tower_of={i.name: i.tower_name for i in spec.inputs})
        outcome.path.replace(out)
    except EdgemmError as err:  # GateFailed included: int8 falls back to fp16, as the policy says
        notes.append(f"int8 dropped: {str(err).splitlines()[0][:300]}; fp16 ships")
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kept = outcome.kept_float  # the placement shipped (a passed sensitivity measurement keeps whole towers)
    share = quantized_share(out)
    notes.append(f"int8 graph made here: {what} {100 * reference:.2f} -> {100 * outcome.accuracy:.2f} on ONNX "
                 f"Runtime (budget {100 * budget:.2f} points), {100 * share:.0f} % of Conv/MatMul/Gemm in int8"
                 + (f"; {len(kept)} kept in float by the accuracy fallback" if kept else ""))
    return out


def _scorer(fp32: Path, spec: ModelSpec, validation) -> tuple[Callable[[Path], float], str]:
    """Accuracy (classifiers) or mean cosine to the fp32 outputs (embeddings) on held-out data."""
    data = load_split(spec.dataset, validation.split, spec)
    data = data.take(np.arange(min(validation.samples, len(data))))

    def outputs(path: Path) -> np.ndarray:
        return task_outputs(load_session(LoadedModel(spec, str(path), "onnx", onnx_path=path), "ort-cpu"), data)

    if spec.task.kind == "classification":
        return (lambda path: accuracy_of(outputs(path), data, spec.name)), f"{validation.split} accuracy"
    reference = outputs(fp32)
    return (lambda path: metrics.mean_cosine(reference, outputs(path))), f"{validation.split} cosine to fp32 (x100)"
