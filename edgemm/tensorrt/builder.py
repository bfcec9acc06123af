"""Build a TensorRT engine from a :class:`BuildPlan` with TensorRT's Python API (optional extra
``edgemm[tensorrt]``; needs an NVIDIA GPU). The same settings as :func:`commands.trtexec_build`:

- the ONNX parser, its errors reported per node with the operator [TRT §1 OnnxParser];
- a strongly typed network on TensorRT >= 10 (precision comes from the ONNX: Q/DQ or an fp16 graph),
  weak typing with FP16 (+INT8 for Q/DQ) on 8.5 only [TRT §0];
- one optimization profile covering every input; workspace pool; builder optimisation level;
  DLA core with GPU fallback, and the layers DLA cannot run named; 2:4 sparsity; a timing cache read
  and written back; the engine's own layer information (IEngineInspector) saved beside it.

``python -m edgemm.tensorrt.builder BUNDLE/build.json PRECISION`` builds one candidate of a bundle
(the bundle's device script calls it when edgemm and TensorRT are both installed).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemm.artifacts import atomic_path, write_json, write_text
from edgemm.errors import EdgemmError, LibraryFailed, NotDeployable, as_user_error
from edgemm.lazy import lazy_import
from edgemm.tensorrt.commands import BuildPlan, as_shell, trtexec_build
from edgemm.tensorrt.engine_key import current_key
from edgemm.tensorrt.settings import TensorRTSettings

trt = lazy_import("tensorrt", "pip install 'edgemm[tensorrt]' (TensorRT from NVIDIA's index; JetPack ships it)")

HARDWARE_LEVELS = {"ampere+": "AMPERE_PLUS", "sameComputeCapability": "SAME_COMPUTE_CAPABILITY"}


@dataclass
class BuiltEngine:
    path: Path
    seconds: float
    layers_on_gpu_not_dla: list[str] = field(default_factory=list)
    key: dict[str, Any] = field(default_factory=dict)


def build_engine(plan: BuildPlan, root: Path = Path("."), compute_capability: str | None = None) -> BuiltEngine:
    """Parse, configure, build and serialise; paths in ``plan`` are relative to ``root``. The engine file is
    written last: an interrupted build leaves no engine that looks complete."""
    start = time.perf_counter()
    installed = int(trt.__version__.split(".")[0])
    if installed != plan.settings.major:
        raise EdgemmError(f"TensorRT {trt.__version__} is installed; the profile builds for TensorRT "
                          f"{plan.settings.major}", f"export with a profile for TensorRT {installed} "
                          "(`edgemm profiles list`), or install the TensorRT the profile names")
    key = current_key(plan.precision, compute_capability)  # before anything is written
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(installed))
    parser = trt.OnnxParser(network, logger)
    onnx_path = root / plan.onnx
    if not parser.parse_from_file(str(onnx_path)):
        raise NotDeployable(f"TensorRT's ONNX parser refused {onnx_path}: " + "; ".join(
            _parser_error(parser.get_error(i)) for i in range(parser.num_errors)),
            "`edgemm inspect` names the operators to change; re-export without them")
    config = builder.create_builder_config()
    try:
        _configure(config, builder, plan, installed)
    except (RuntimeError, ValueError, TypeError) as err:  # a shape outside the network's, a bad pool size
        raise EdgemmError(f"TensorRT refused the build settings for {onnx_path}: {err}",
                          "check tensorrt.shapes against the model's inputs (`edgemm info`)") from None
    off_dla = _dla(config, network, plan.settings)
    cache = _timing_cache(config, root / plan.timing_cache if plan.timing_cache else None, plan.settings)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:  # the builder logs why; None is all the API returns [TRT §1]
        raise LibraryFailed(f"TensorRT could not build {onnx_path} (see the log above)",
                            f"try the same build with trtexec --verbose: {as_shell(trtexec_build(plan))}")
    if plan.layer_info is not None:
        write_text(root / plan.layer_info, layer_information(bytes(serialized), logger))
    if cache is not None and plan.timing_cache is not None:
        with atomic_path(root / plan.timing_cache) as tmp:
            tmp.write_bytes(bytes(cache.serialize()))
    engine_path = root / plan.engine
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return BuiltEngine(engine_path, time.perf_counter() - start, off_dla, key.to_dict())


def _network_flags(installed_major: int) -> int:
    """Strongly typed on TensorRT >= 10 (11: always, the flag a no-op); explicit batch on 8.x, where the
    default network is implicit-batch and the ONNX parser refuses it [TRT §0, §1]."""
    flags = trt.NetworkDefinitionCreationFlag
    if installed_major >= 10 and hasattr(flags, "STRONGLY_TYPED"):
        return 1 << int(flags.STRONGLY_TYPED)
    if hasattr(flags, "EXPLICIT_BATCH"):
        return 1 << int(flags.EXPLICIT_BATCH)
    return 0


def _parser_error(err: Any) -> str:
    """Node, operator and description where the bindings have them (10.x); the error's own text elsewhere."""
    try:
        return f"node {err.node_name() or err.node()} ({err.node_operator()}): {err.desc()}"
    except AttributeError:
        return str(err)


def _configure(config: Any, builder: Any, plan: BuildPlan, installed_major: int) -> None:
    s = plan.settings
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s.workspace_mib << 20)
    if hasattr(config, "builder_optimization_level"):  # 8.6 and later
        config.builder_optimization_level = s.builder_optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if installed_major < 10 and plan.precision != "fp32" and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)  # weak typing: allow what the graph holds; Q/DQ needs INT8 (#4021)
        if plan.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    if s.sparsity:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if s.hardware_compatibility != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                      HARDWARE_LEVELS[s.hardware_compatibility])
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in plan.shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)


def _dla(config: Any, network: Any, settings: TensorRTSettings) -> list[str]:
    """Build for DLA; return the layers DLA cannot run (they fall back to the GPU silently otherwise)."""
    if settings.dla.core is None:
        return []
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = settings.dla.core
    if settings.dla.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    off = [network.get_layer(i).name for i in range(network.num_layers)
           if not config.can_run_on_DLA(network.get_layer(i))]
    if off and not settings.dla.gpu_fallback:
        raise NotDeployable(f"DLA cannot run {len(off)} layer(s): {', '.join(off[:8])}",
                            "set tensorrt.dla.gpu_fallback: true, or build for the GPU (dla.core: null)")
    return off


def _timing_cache(config: Any, path: Path | None, settings: TensorRTSettings) -> Any:
    if not settings.timing_cache:
        return None
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # a cache from another device is refused, not trusted
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def layer_information(serialized: bytes, logger: Any) -> str:
    """The engine's own per-layer information (JSON): which kernels, precisions and devices it chose."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise LibraryFailed("TensorRT could not load the engine it just built", "see the TensorRT log above")
    return engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)


def build_from_bundle(plan_file: Path, precision: str) -> BuiltEngine:
    """Build one candidate of a bundle written by ``edgemm export --target tensorrt``."""
    from edgemm.spec import ModelSpec  # noqa: PLC0415

    try:
        data = json.loads(plan_file.read_text())
        entry = next((c for c in data["candidates"] if c["precision"] == precision), None)
        settings = _settings_of(plan_file.parent)  # the bundle's profile.yaml, as exported
        spec = ModelSpec.model_validate(data["spec"])
    except (OSError, ValueError, KeyError, TypeError) as err:  # JSON, YAML and pydantic errors included
        raise EdgemmError(f"{plan_file.parent} is not a readable edgemm bundle ({type(err).__name__}: "
                          f"{str(err)[:200]})",
                          "export the bundle again with edgemm export --target tensorrt") from None
    if entry is None:
        raise EdgemmError(f"{plan_file} has no {precision} candidate",
                          f"choose one of {[c['precision'] for c in data['candidates']]}")
    plan = BuildPlan(Path(entry["onnx"]), Path(entry["engine"]), precision,
                     {n: tuple(tuple(s) for s in r) for n, r in entry["shapes"].items()}, settings,
                     Path(data["timing_cache"]) if data.get("timing_cache") else None, Path(entry["layer_info"]),
                     dynamic=bool(spec.axes))
    sidecar = plan_file.parent / (entry["engine"] + ".json")
    sidecar.unlink(missing_ok=True)
    built = build_engine(plan, plan_file.parent, (data.get("device") or {}).get("compute_capability"))
    write_json(sidecar, {"key": built.key, "spec": spec.model_dump(mode="json"), "shapes": entry["shapes"],
                         "built_by": "edgemm", "onnx_sha256": entry["onnx_sha256"], "dla_core": settings.dla.core,
                         "layers_on_gpu_not_dla": built.layers_on_gpu_not_dla, "seconds": round(built.seconds, 1)})
    return built


def _settings_of(bundle: Path) -> TensorRTSettings:
    import yaml  # noqa: PLC0415

    profile = yaml.safe_load((bundle / "profile.yaml").read_text())
    return TensorRTSettings.model_validate(profile.get("tensorrt") or {})


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m edgemm.tensorrt.builder BUNDLE/build.json PRECISION", file=sys.stderr)
        return 2
    try:
        built = build_from_bundle(Path(argv[0]), argv[1])
    except BaseException as err:  # noqa: BLE001 - the one boundary of this command: a message, never a traceback
        failure = as_user_error(err)
        print(f"error: {failure}", file=sys.stderr)
        return failure.exit_code
    print(f"built {built.path} in {built.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
