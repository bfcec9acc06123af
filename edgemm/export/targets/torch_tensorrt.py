"""The ``torch-tensorrt`` target: torch-tensorrt's dynamo path, with ``Input(min, opt, max)`` for every
input from the contract (and the profile's ``tensorrt.shapes``), saved as an ExportedProgram, and the
operators that fell back to PyTorch named (torch-tensorrt partitions the graph into TensorRT
``_run_on_acc_N`` and PyTorch ``_run_on_gpu_N`` submodules). Needs an NVIDIA GPU and torch-tensorrt
paired with the installed torch ([TRT §5]: torch-tensorrt 2.13 pairs with torch 2.13 and TensorRT 11.0)."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from edgemm.artifacts import atomic_path, write_json, write_manifest
from edgemm.config import Strict
from edgemm.errors import ConfigError, ValidationFailed
from edgemm.export.profiles import ExportProfile
from edgemm.export.target import EXPORT_TARGETS, ExportResult, ExportTarget
from edgemm.lazy import lazy_import
from edgemm.metrics import mean_cosine
from edgemm.models.registry import LoadedModel
from edgemm.tensorrt.settings import TensorRTSettings, shape_ranges

torch = lazy_import("torch")
torch_tensorrt = lazy_import("torch_tensorrt", "pip install 'edgemm[torch-tensorrt]' (the release paired with your torch)")

PROGRAM_FILE = "model.ep"
TORCH_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32", "uint8": "uint8",
                "bool": "bool"}


class TorchTensorRTSettings(Strict):
    """The ``torch-tensorrt:`` section; shapes, workspace and optimisation level come from ``tensorrt:``."""

    min_block_size: int = Field(5, ge=1, description="smallest run of ops worth a TensorRT engine")
    require_full_compilation: bool = Field(False, description="fail instead of falling back to PyTorch")
    min_cosine: float = Field(0.999, le=1, description="outputs vs eager PyTorch on the example inputs")


@EXPORT_TARGETS.register
class TorchTensorRTTarget(ExportTarget):
    name = "torch-tensorrt"
    description = "torch-tensorrt (dynamo) module with dynamic shapes from the contract; PyTorch fallbacks named"
    config = TorchTensorRTSettings
    consumes = "torch"
    produces = "torch-tensorrt"
    requires = ("torch_tensorrt",)
    extra = "torch-tensorrt"
    supports = ("cuda", "fp32", "fp16")
    needs_gpu = True


    def export(self, model: LoadedModel, out_dir: Path, profile: ExportProfile) -> ExportResult:
        return export_torch_tensorrt(model, out_dir, profile)


def precision_options(precision: str) -> dict[str, Any]:
    """fp16 without the deprecated enabled_precisions path: autocast on >= 2.10 (explicit typing default)."""
    if precision != "fp16":
        return {}
    major, minor = (int(x) for x in torch_tensorrt.__version__.split(".")[:2])
    if (major, minor) >= (2, 10):
        return {"enable_autocast": True, "autocast_low_precision_type": torch.float16}
    return {"enabled_precisions": {torch.float16}}


def fallback_ops(compiled: Any) -> dict[str, int]:
    """Operators left to PyTorch: the call_function targets inside torch-tensorrt's ``_run_on_gpu_*``
    submodules, counted."""
    counts: Counter[str] = Counter()
    for name, sub in compiled.named_children():
        if name.startswith("_run_on_gpu") and hasattr(sub, "graph"):
            counts.update(str(n.target) for n in sub.graph.nodes if n.op == "call_function")
    return dict(counts)


def export_torch_tensorrt(model: LoadedModel, out_dir: Path, profile: ExportProfile) -> ExportResult:
    start = time.perf_counter()
    if profile.precision not in ("fp32", "fp16"):
        raise ConfigError(f"profile {profile.name!r} asks for {profile.precision}; the torch-tensorrt target builds "
                          "fp32 or fp16", "for int8, export the compressed Q/DQ graph with --target tensorrt")
    settings: TorchTensorRTSettings = profile.section("torch-tensorrt")
    trt_settings: TensorRTSettings = profile.section("tensorrt")
    ranges = shape_ranges(model.spec, trt_settings)
    inputs = [torch_tensorrt.Input(min_shape=lo, opt_shape=opt, max_shape=hi, name=name,
                                   dtype=getattr(torch, TORCH_DTYPES[model.spec.input(name).dtype]))
              for name, (lo, opt, hi) in ranges.items()]
    module = model.module.eval().cuda()
    example = [torch.from_numpy(a).cuda() for a in model.spec.example_inputs(seed=0).values()]
    compiled = torch_tensorrt.compile(
        module, ir="dynamo", arg_inputs=inputs, min_block_size=settings.min_block_size,
        require_full_compilation=settings.require_full_compilation,
        workspace_size=trt_settings.workspace_mib << 20, optimization_level=trt_settings.builder_optimization_level,
        **precision_options(profile.precision))
    with torch.no_grad():
        reference, candidate = module(*example), compiled(*example)
    cosine = mean_cosine(_first(reference).float().cpu().numpy(), _first(candidate).float().cpu().numpy())
    if cosine < settings.min_cosine:
        raise ValidationFailed(f"torch-tensorrt output disagrees with eager PyTorch: cosine {cosine:.5f} < "
                               f"{settings.min_cosine}", "build fp32 (precision: fp32) or raise min_block_size")
    fallback = fallback_ops(compiled)
    with atomic_path(out_dir / PROGRAM_FILE) as tmp:
        torch_tensorrt.save(compiled, str(tmp), output_format="exported_program", arg_inputs=example)
    details = {"cosine_vs_eager": cosine, "pytorch_fallback_ops": fallback,
               "torch_tensorrt": torch_tensorrt.__version__}
    write_json(out_dir / "fallback.json", details)
    write_manifest(out_dir, kind="export", inputs={"source": model.source, "sha256": model.sha256()},
                   config={"target": "torch-tensorrt", "profile": profile.model_dump(mode="json", by_alias=True)},
                   metrics={**details, "seconds": round(time.perf_counter() - start, 2)},
                   artifacts=[PROGRAM_FILE, "fallback.json"], extra={"spec": model.spec.model_dump(mode="json")})
    return ExportResult(out_dir / PROGRAM_FILE, None, time.perf_counter() - start, details)


def _first(outputs: Any) -> Any:
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs
