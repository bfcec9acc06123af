"""The ``tensorrt`` target: ONNX graphs whose precision is in the graph (Q/DQ for int8, a half graph for
fp16), checked against TensorRT's parser rules, then built into engines where TensorRT and a GPU are
present, or written as a device build bundle where they are not (this machine, CI, a laptop).

Precision policy (the profile's ``precision``): fp32 and fp16 build one engine; int8 builds int8 *and*
fp16 and keeps int8 only where it is at least ``tensorrt.min_int8_speedup`` faster (INT8 slower than
FP16 is the field's most common TensorRT surprise, [TRT §8.1]); best keeps the faster of the two.
The int8 graph is the model's own when it already carries Q/DQ (``edgemm compress`` with this profile),
else it is made here with the profile's symmetric scheme and kept only within
``tensorrt.int8_max_accuracy_drop`` of the fp32 graph on ONNX Runtime.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgemm.artifacts import write_json, write_manifest
from edgemm.bench.cost import onnx_precision
from edgemm.errors import LibraryFailed, NotDeployable
from edgemm.export.profiles import ExportProfile
from edgemm.export.target import EXPORT_TARGETS, ExportResult, ExportTarget
from edgemm.export.validate import ValidationReport
from edgemm.export.targets.onnx import export_onnx
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel, has_contract
from edgemm.tensorrt.bundle import PLAN_FILE, SCRIPT_NAME, checked_bench_shapes, copy_candidate, write_bundle
from edgemm.tensorrt.compat import CompatibilityReport, check_onnx
from edgemm.tensorrt.int8 import quantize_checked, quantized_share, to_fp16
from edgemm.tensorrt.settings import TensorRTSettings

onnx = lazy_import("onnx")

COMPAT_FILE = "compatibility.json"
WANTED = {"fp32": ("fp32",), "fp16": ("fp16",), "int8": ("int8", "fp16"), "best": ("int8", "fp16")}
STALE = ("manifest.json", PLAN_FILE, COMPAT_FILE, "model.engine", "model.engine.json", "commands.sh", SCRIPT_NAME,
         "profile.yaml", "README.md", "model.fp32.onnx", "model.fp16.onnx", "model.int8.onnx")


@EXPORT_TARGETS.register
class TensorRTTarget(ExportTarget):
    name = "tensorrt"
    description = ("TensorRT engine (strongly typed, one optimization profile over every input); without "
                   "TensorRT here: a bundle that builds, checks int8 vs fp16 and times on the device")
    config = TensorRTSettings
    consumes = "torch"  # or an ONNX file (a compressed Q/DQ graph)
    produces = "engine"
    extra = "tensorrt"
    supports = ("cuda", "jetson", "fp32", "fp16", "int8")

    def export(self, model: LoadedModel, out_dir: Path, profile: ExportProfile) -> ExportResult:
        return export_tensorrt(model, out_dir, profile)


def tensorrt_here() -> str | None:
    """None when engines can be built on this machine, else why not."""
    try:
        import tensorrt  # noqa: F401, PLC0415
    except Exception as err:  # noqa: BLE001 - the PyPI stubs fail in several ways
        return f"TensorRT is not installed here ({type(err).__name__})"
    torch = lazy_import("torch")
    return None if torch.cuda.is_available() else "no CUDA GPU here"


def export_tensorrt(model: LoadedModel, out_dir: Path, profile: ExportProfile) -> ExportResult:
    start = time.perf_counter()
    settings: TensorRTSettings = profile.section("tensorrt")
    checked_bench_shapes(model.spec, settings)  # shapes or batch sizes the model cannot take fail before any export
    for stale in STALE:
        (out_dir / stale).unlink(missing_ok=True)
    for stale_dir in ("engines", "device_report", "int8-work"):  # an older model's engines and timings
        shutil.rmtree(out_dir / stale_dir, ignore_errors=True)
    notes: list[str] = []
    fp32, validation = _float_graph(model, out_dir, profile)
    candidates = _candidates(model, fp32, out_dir, profile, notes)
    ranged = model.spec.axes if has_contract(model) else {}  # a foreign graph's ranges were only guessed
    reports = {p: check_onnx(path, settings, ranged) for p, path in candidates.items()}
    write_json(out_dir / COMPAT_FILE, {p: r.to_dict() for p, r in reports.items()})
    _refuse_errors(reports, out_dir)
    plan = write_bundle(out_dir, model.spec, profile, candidates, notes)
    missing = tensorrt_here()
    built = None
    if missing is None:  # build and time here, with the bundle's own script (one decision rule)
        if subprocess.run([sys.executable, str(out_dir / SCRIPT_NAME)]).returncode != 0:
            raise LibraryFailed(f"building or timing the TensorRT engines in {out_dir} failed (its message is above)",
                                f"read {out_dir / 'device_report'}/*.log; the bundle is complete and can be rebuilt "
                                f"with python3 {out_dir / SCRIPT_NAME}")
        built = out_dir / "model.engine"
    else:
        notes.append(f"{missing}: wrote a device build bundle; on the device run python3 {SCRIPT_NAME}")
    details = {"candidates": sorted(candidates), "bundle": built is None, "tensorrt_major": settings.major,
               "notes": notes, "warnings": sum(len(r.findings) - len(r.errors) for r in reports.values())}
    artifacts = [p.name for p in candidates.values()] + [PLAN_FILE, COMPAT_FILE, "profile.yaml", "commands.sh",
                                                        SCRIPT_NAME, "README.md"]
    write_manifest(out_dir, kind="tensorrt-bundle" if built is None else "tensorrt-engine",
                   inputs={"source": model.source, "sha256": model.sha256()},
                   config={"target": "tensorrt", "profile": profile.model_dump(mode="json", by_alias=True)},
                   metrics={"validation_passed": None if validation is None else validation.passed, **details,
                            "seconds": round(time.perf_counter() - start, 2)},
                   artifacts=artifacts + (["model.engine"] if built else []),
                   extra={"spec": model.spec.model_dump(mode="json"), "batch_sizes": plan["batch_sizes"]})
    return ExportResult(built or out_dir, validation, time.perf_counter() - start, details)


def _float_graph(model: LoadedModel, out_dir: Path,
                 profile: ExportProfile) -> tuple[Path | None, ValidationReport | None]:
    """The validated fp32 ONNX (exported here from PyTorch), or the given ONNX file (None if it is Q/DQ)."""
    if model.onnx_path is None:
        result = export_onnx(model, out_dir / "onnx", profile)
        return result.path, result.validation
    if onnx_precision(model.onnx_path) == "int8":  # already quantized: it is the int8 candidate
        return None, None
    return model.onnx_path, None


def _candidates(model: LoadedModel, fp32: Path | None, out_dir: Path, profile: ExportProfile,
                notes: list[str]) -> dict[str, Path]:
    wanted = WANTED[profile.precision]
    if fp32 is None:  # a Q/DQ graph was given: it is the int8 candidate whatever the policy
        notes.append("the given ONNX carries Q/DQ: built as int8 only (give the float ONNX too for the int8 vs "
                     "fp16 check)")
        return {"int8": copy_candidate(model.onnx_path, out_dir, "int8")}
    out: dict[str, Path] = {}
    if "int8" in wanted:
        int8 = quantize_checked(model, fp32, out_dir / "model.int8.onnx", profile, notes)
        share, need = (quantized_share(int8) if int8 else 0.0), profile.section("tensorrt").min_int8_share
        if int8 is not None and share < need:
            notes.append(f"int8 dropped: only {100 * share:.0f} % of Conv/MatMul/Gemm stayed int8 within the accuracy "
                         f"budget (tensorrt.min_int8_share {100 * need:.0f} %); fp16 ships. Try `edgemm compress` "
                         "with this profile (distillation, per-tower modes) for an int8 graph that keeps accuracy")
            int8.unlink()
        elif int8 is not None:
            out["int8"] = int8
    if "fp16" in wanted:
        out["fp16"] = to_fp16(fp32, out_dir / "model.fp16.onnx")
    if "fp32" in wanted:
        out["fp32"] = copy_candidate(fp32, out_dir, "fp32")
    return out


def _refuse_errors(reports: dict[str, CompatibilityReport], out_dir: Path) -> None:
    errors = [(p, f) for p, r in reports.items() for f in r.errors]
    if errors:
        shown = "; ".join(f"{p}: {f.where}: {f.reason}" for p, f in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise NotDeployable(f"TensorRT will not take this graph: {shown}{more}",
                            f"{errors[0][1].fix}; every finding is in {out_dir / COMPAT_FILE}")
