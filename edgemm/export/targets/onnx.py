"""The ``onnx`` target: PyTorch -> ONNX with the dynamo exporter, dynamic axes from the contract,
onnxslim, and validation against PyTorch. Every other target starts from its output."""
from __future__ import annotations

import inspect
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgemm.artifacts import atomic_path, sha256_file, write_json, write_manifest
from edgemm.config import Strict
from edgemm.errors import (USER_CODE_ERRORS, ConfigError, EdgemmError, ModelLoadError, ModelRunFailed,
                           ValidationFailed, interrupted_while)
from edgemm.export.profiles import ExportProfile
from edgemm.export.target import EXPORT_TARGETS, ExportResult, ExportTarget
from edgemm.export.validate import validate
from edgemm.lazy import lazy_import
from edgemm.models.registry import SPEC_METADATA_KEY, LoadedModel
from edgemm.spec import ModelSpec

torch = lazy_import("torch")
onnx = lazy_import("onnx")
onnxslim = lazy_import("onnxslim")

ONNX_FILE = "model.onnx"
REJECTED_FILE = "model.rejected.onnx"
VALIDATION_FILE = "validation.json"


class OnnxSettings(Strict):
    """The ``onnx:`` section of an export profile."""

    opset: int = Field(18, ge=13, description="ONNX opset for the dynamo exporter; an opset it cannot write (it "
                                              "writes 18 and later for most models) is refused, not replaced")
    simplify: bool = Field(True, description="run onnxslim after export")
    exporter: Literal["dynamo", "torchscript"] = Field("dynamo", description=(
        "dynamo: torch.export based, opset 18 and later. torchscript: the legacy tracer, for runtimes that need "
        "an older opset (TensorRT 8.5 on JetPack 5 parses up to 17 and has no LayerNormalization: opset 16 "
        "writes it as primitive ops)"))


@EXPORT_TARGETS.register
class OnnxTarget(ExportTarget):
    name = "onnx"
    description = "ONNX (dynamo exporter, every named axis dynamic, onnxslim), validated against PyTorch"
    config = OnnxSettings
    produces = "onnx"
    requires = ("onnx", "onnxscript", "onnxruntime")
    supports = ("fp32",)

    def export(self, model: LoadedModel, out_dir: Path, profile: ExportProfile) -> ExportResult:
        return export_onnx(model, out_dir, profile)


def export_sizes(spec: ModelSpec) -> dict[str, int]:
    """Example sizes for tracing: >= 2 on every dynamic axis (torch.export specialises 0 and 1)."""
    return {name: min(rng.max, max(2, rng.opt if name != "batch" else 2)) for name, rng in spec.axes.items()}


def dynamic_shapes(spec: ModelSpec, module: Any) -> tuple:
    """One ``torch.export.Dim`` per axis *name*, shared by every input that uses it."""
    dims = {name: torch.export.Dim(name, min=rng.min, max=rng.max) for name, rng in spec.axes.items()}
    per_input = tuple({i: dims[a] for i, a in inp.dynamic_axes.items()} or None for inp in spec.inputs)
    if isinstance(module, torch.fx.GraphModule):  # traced graphs (INC's) keep a flat input signature
        return per_input
    params = inspect.signature(module.forward).parameters.values()
    # forward(*args): torch.export sees one tuple argument, so the shapes nest one level deeper.
    return (per_input,) if any(p.kind is p.VAR_POSITIONAL for p in params) else per_input


def to_onnx_proto(model: LoadedModel, settings: OnnxSettings, module: Any = None) -> Any:
    """Export ``module`` (default: the model's own) with the spec's names and dynamic axes."""
    opset = settings.opset
    # The exporter logs one warning per torchvision op it cannot register; not the user's concern.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    if model.module is None:
        raise ModelLoadError(f"{model.source} is already ONNX", "export a PyTorch model (zoo name, module:factory, run dir)")
    example = model.spec.example_inputs(export_sizes(model.spec), seed=0)
    args = tuple(torch.from_numpy(example[name]) for name in model.spec.input_names)
    module = module if module is not None else model.module.eval()
    try:  # a forward that fails by itself is the model's problem, not the exporter's: say so plainly
        with torch.no_grad():
            module(*args)
    except USER_CODE_ERRORS as err:  # noqa: BLE001 - whatever the user's forward raises (or exits with)
        raise ModelRunFailed(f"the forward of {model.source} raises on example inputs its contract allows "
                             f"({', '.join(f'{n} {list(a.shape)}' for n, a in zip(model.spec.input_names, args))}): "
                             f"{type(err).__name__}: {str(err)[:400]}",
                             "fix the forward (or the contract's shapes); it must run in eager PyTorch before "
                             "it can be exported") from None
    try:
        if settings.exporter == "torchscript":
            proto = _torchscript_export(module, args, model.spec, opset)
        else:
            proto = torch.onnx.export(
                module, args, dynamo=True, opset_version=opset, input_names=model.spec.input_names,
                output_names=model.spec.output_names, dynamic_shapes=dynamic_shapes(model.spec, module),
                external_data=False, verbose=False).model_proto
    except Exception as err:  # torch.export raises many types; the message is what helps
        if interrupted_while(err):  # Ctrl-C inside one of torch's lazy imports, replaced by the error it left
            raise KeyboardInterrupt from err
        lines = [ln for ln in str(_root_cause(err)).splitlines()
                 if ln.strip() and "full stack trace above" not in ln]  # that trace is not shown
        raise EdgemmError(f"torch.onnx.export failed for {model.source}: {' / '.join(lines[-3:])[:600]}",
                          "make forward() traceable by torch.export (no data-dependent Python control flow); "
                          "see the spec's axis ranges if a dimension was specialised") from None
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter falls back silently; the manifest must not claim the profile's opset
        raise ConfigError(f"the profile asks for ONNX opset {opset}, but torch.onnx wrote opset {written}",
                          f"set onnx.opset to {written} (or another opset this torch can write) in the profile")
    return proto


def _torchscript_export(module: Any, args: tuple, spec: ModelSpec, opset: int) -> Any:
    """The legacy tracer: every named axis of every input and output dynamic, under its contract name."""
    axes = {i.name: i.dynamic_axes for i in spec.inputs}
    axes.update({o.name: {k: d for k, d in enumerate(o.shape) if isinstance(d, str)} for o in spec.outputs})
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # tracer warnings about Python values are about tracing, not the user
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def save_onnx(proto: Any, spec: ModelSpec, target: Path, **metadata: str) -> Path:
    """Write an ONNX graph atomically, stamped with the contract so it loads like any edgemm ONNX file."""
    onnx.helper.set_model_props(proto, {SPEC_METADATA_KEY: spec.to_json(), **metadata})
    with atomic_path(target) as tmp:
        onnx.save_model(proto, str(tmp))
    return target


def export_onnx(model: LoadedModel, out_dir: str | Path, profile: ExportProfile) -> ExportResult:
    """Export, simplify, validate; write ``model.onnx`` + ``validation.json`` + ``manifest.json``.

    On a failed validation the graph is kept as ``model.rejected.onnx`` for
    inspection, no ``model.onnx`` or manifest is left behind, and
    :class:`ValidationFailed` is raised.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("manifest.json", ONNX_FILE, REJECTED_FILE, VALIDATION_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    settings: OnnxSettings = profile.section("onnx")
    proto = to_onnx_proto(model, settings)
    nodes_exported = len(proto.graph.node)
    if settings.simplify:
        proto = onnxslim.slim(proto)
    onnx.helper.set_model_props(proto, {SPEC_METADATA_KEY: model.spec.to_json(), "edgemm.source": model.source,
                                        "edgemm.profile": profile.name})
    with atomic_path(out_dir / ONNX_FILE) as tmp:
        onnx.save_model(proto, str(tmp))
        written = LoadedModel(model.spec, f"{out_dir / ONNX_FILE} (as exported, before validation)", "onnx",
                              onnx_path=tmp)  # messages name the file the user will look for, not the temp file
        report = validate(model, written, profile.validation)
        write_json(out_dir / VALIDATION_FILE, report.to_dict())
        if not report.passed:
            tmp.rename(out_dir / REJECTED_FILE)
            raise ValidationFailed(f"exported ONNX disagrees with PyTorch: {report.failure_text()}",
                                   f"inspect {out_dir / REJECTED_FILE} and {out_dir / VALIDATION_FILE}; "
                                   "loosen the profile's validation tolerances only if the drift is expected")
    details = {"nodes_exported": nodes_exported, "nodes_simplified": len(proto.graph.node)}
    result = ExportResult(out_dir / ONNX_FILE, report, time.perf_counter() - start, details)
    write_manifest(out_dir, kind="export", inputs=_input_hashes(model),
                   config={"target": "onnx", "profile": profile.model_dump(mode="json", by_alias=True),
                           "source": model.source},
                   metrics={"validation_passed": True, **details, "seconds": round(result.seconds, 2),
                            "checks": [c.__dict__ for c in report.checks]},
                   artifacts=[ONNX_FILE, VALIDATION_FILE], extra={"spec": model.spec.model_dump(mode="json")})
    return result


def _input_hashes(model: LoadedModel) -> dict[str, str]:
    hashes = {"source": model.source}
    if model.weights is not None:
        hashes["weights_sha256"] = sha256_file(model.weights)
    return hashes
