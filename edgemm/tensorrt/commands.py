"""trtexec command lines equivalent to edgemm's builder, spelled for the profile's TensorRT major [TRT §3].

- 10.x: ``--stronglyTyped`` and no precision flags: precision comes from the ONNX (Q/DQ, fp16 graph).
- 11.x: always strongly typed; ``--fp16/--int8/--best`` are gone, so none is written [TRT §0].
- 8.5 (JetPack 5, Xavier): no strong typing; ``--fp16`` (plus ``--int8`` for a Q/DQ graph) is how
  explicit quantization builds there, ``--buildOnly`` instead of 8.6's ``--skipInference``.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal, Sequence

from edgemm.tensorrt.settings import ShapeRanges, TensorRTSettings

Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class BuildPlan:
    """One engine to build: which ONNX, at which precision, with which shapes and settings."""

    onnx: PurePath
    engine: PurePath
    precision: Precision  # what the ONNX carries: int8 = Q/DQ graph, fp16 = half graph
    shapes: ShapeRanges
    settings: TensorRTSettings
    timing_cache: PurePath | None = None
    layer_info: PurePath | None = None
    # The ONNX has dynamic dimensions (edgemm exports every named axis of the contract dynamic). Then every
    # input needs its shapes given, also when min = opt = max (DLA): trtexec sets unspecified ones to 1.
    dynamic: bool = True


def shape_arg(shapes: dict[str, tuple[int, ...]]) -> str:
    """``in0:1x3x32x32,in1:1x8``; a name with a colon is quoted the way trtexec reads it."""
    def name(n: str) -> str:
        return f"'{n}'" if ":" in n else n
    return ",".join(f"{name(n)}:{'x'.join(str(d) for d in s)}" for n, s in shapes.items())


def trtexec_build(plan: BuildPlan) -> list[str]:
    s, major = plan.settings, plan.settings.major
    cmd = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={plan.engine}"]
    if major == 10:
        cmd.append("--stronglyTyped")
    elif major == 8 and plan.precision != "fp32":  # weak typing: the flags allow the precision the graph holds
        cmd += ["--fp16"] + (["--int8"] if plan.precision == "int8" else [])
    if plan.dynamic:
        for flag, which in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            cmd.append(f"{flag}={shape_arg({n: r[which] for n, r in plan.shapes.items()})}")
    cmd.append(f"--memPoolSize=workspace:{s.workspace_mib}M")
    if major >= 10:
        cmd.append(f"--builderOptimizationLevel={s.builder_optimization_level}")
    if s.dla.core is not None:
        cmd.append(f"--useDLACore={s.dla.core}")
        if s.dla.gpu_fallback:
            cmd.append("--allowGPUFallback")
    if s.sparsity:
        cmd.append("--sparsity=enable")
    if s.hardware_compatibility != "none":
        cmd.append(f"--hardwareCompatibilityLevel={s.hardware_compatibility}")
    if s.timing_cache and plan.timing_cache is not None:
        cmd.append(f"--timingCacheFile={plan.timing_cache}")
    cmd.append("--profilingVerbosity=detailed")
    if plan.layer_info is not None:
        cmd.append(f"--exportLayerInfo={plan.layer_info}")
    cmd.append("--buildOnly" if major == 8 else "--skipInference")
    return cmd


def trtexec_bench(engine: PurePath, shapes: dict[str, tuple[int, ...]], settings: TensorRTSettings,
                  times: PurePath, dynamic: bool = True) -> list[str]:
    """Time a built engine at one set of input shapes; raw per-query times go to ``times`` (JSON)."""
    b = settings.bench
    cmd = ["trtexec", f"--loadEngine={engine}"]
    if dynamic:
        cmd.append(f"--shapes={shape_arg(shapes)}")
    if settings.dla.core is not None:
        cmd.append(f"--useDLACore={settings.dla.core}")
    elif b.cuda_graph:  # DLA engines cannot be captured in a CUDA graph [TRT §8.5]
        cmd.append("--useCudaGraph")
    if b.spin_wait:
        cmd.append("--useSpinWait")
    cmd += [f"--warmUp={b.warmup_ms}", f"--duration={b.duration_s:g}", "--percentile=90", f"--exportTimes={times}"]
    return cmd


def as_shell(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)
