"""The ``tensorrt:`` section of an export profile and the optimization-profile shapes it implies."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgemm.config import Strict
from edgemm.errors import ConfigError
from edgemm.spec import AxisRange, ModelSpec

Major = Literal[8, 10, 11]
HardwareCompatibility = Literal["none", "ampere+", "sameComputeCapability"]


class DlaSettings(Strict):
    core: int | None = Field(None, ge=0, description="DLA core to build for; none = GPU only")
    gpu_fallback: bool = Field(True, description="layers DLA cannot run go to the GPU (a silent fallback: "
                                                 "`edgemm inspect` and the engine's layer list say which)")


class DeviceBench(Strict):
    """How the device script times an engine (trtexec's own options, [TRT §3])."""

    batch_sizes: list[int] = Field([1], min_length=1, description="batch sizes to time (inside the batch range)")
    warmup_ms: int = Field(500, ge=0)
    duration_s: float = Field(10, gt=0)
    cuda_graph: bool = Field(True, description="--useCudaGraph (ignored with DLA, which cannot be captured)")
    spin_wait: bool = True


class TensorRTSettings(Strict):
    """Builder settings; precision itself is the profile's ``precision`` and lives in the ONNX (Q/DQ for int8,
    an fp16 graph for fp16), so one strongly typed build serves TensorRT 10 and 11 [TRT §0]."""

    major: Major = Field(10, description="TensorRT major on the device: 10 (JetPack 6.1/6.2: 10.3; desktop 10.x), "
                                         "11 (JetPack >= 7.2.2, desktop 11.x), 8 (JetPack 5.1, Xavier: 8.5)")
    shapes: dict[str, AxisRange] = Field(default_factory=dict, description=(
        "min/opt/max per named axis of the contract (batch, seq...), inside the contract's range; "
        "default: the contract's own"))
    workspace_mib: int = Field(1024, ge=16, description="builder workspace pool (--memPoolSize=workspace)")
    builder_optimization_level: int = Field(3, ge=0, le=5, description="0-5; higher builds longer, may run faster")
    dla: DlaSettings = DlaSettings()
    sparsity: bool = Field(False, description="2:4 structured-sparse kernels where weights qualify (Ampere+)")
    timing_cache: bool = Field(True, description="persist and reuse the timing cache (timing.cache)")
    hardware_compatibility: HardwareCompatibility = Field("none", description="none: engines run on the GPU "
                                                          "model they were built on")
    min_int8_speedup: float = Field(1.02, ge=1.0, description=(
        "int8 is kept only when at least this much faster than fp16 (ModelOpt's ONNX autotune rule)"))
    min_int8_share: float = Field(0.5, ge=0, le=1, description=(
        "an int8 graph made by export is built only when at least this share of its Conv/MatMul/Gemm are int8 "
        "after the accuracy fallback (a mostly-float graph cannot beat fp16)"))
    int8_max_accuracy_drop: float = Field(0.01, ge=0, le=1, description=(
        "an int8 graph made by export is kept only within this accuracy of the fp32 graph (ONNX Runtime CPU)"))
    bench: DeviceBench = DeviceBench()

    @model_validator(mode="after")
    def _consistent(self) -> "TensorRTSettings":
        if self.dla.core is not None and any(r.min != r.max for r in self.shapes.values()):
            raise ValueError("DLA cannot run dynamic shapes: give min = opt = max for every axis in tensorrt.shapes")
        if self.major == 8 and self.hardware_compatibility != "none":
            raise ValueError("hardware_compatibility needs TensorRT >= 8.6 (not 8.5 on JetPack 5)")
        return self


ShapeRanges = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def axis_ranges(spec: ModelSpec, settings: TensorRTSettings) -> dict[str, AxisRange]:
    """The contract's axes with the profile's overrides, each inside the contract's range."""
    unknown = set(settings.shapes) - set(spec.axes)
    if unknown:
        raise ConfigError(f"tensorrt.shapes names axes {sorted(unknown)} that the model {spec.name!r} does not have",
                          f"its named axes: {sorted(spec.axes) or 'none (all shapes fixed)'}")
    ranges = dict(spec.axes)
    for name, rng in settings.shapes.items():
        allowed = spec.axes[name]
        if rng.min < allowed.min or rng.max > allowed.max:
            raise ConfigError(f"tensorrt.shapes.{name} {rng.min}/{rng.opt}/{rng.max} leaves the model's range "
                              f"{allowed.min}..{allowed.max}", "keep min >= and max <= the contract's axis range")
        ranges[name] = rng
    if settings.dla.core is not None:  # DLA: no dynamic dims [TRT §8.5]; build at the typical size
        ranges = {n: AxisRange(min=r.opt, opt=r.opt, max=r.opt) if r.min != r.max else r for n, r in ranges.items()}
    return ranges


def shape_ranges(spec: ModelSpec, settings: TensorRTSettings) -> ShapeRanges:
    """min/opt/max shape of *every* input: one optimization profile must cover them all [TRT §8.4]."""
    ranges = axis_ranges(spec, settings)
    return {inp.name: tuple(inp.concrete_shape({n: getattr(r, which) for n, r in ranges.items()})  # type: ignore
                            for which in ("min", "opt", "max")) for inp in spec.inputs}
