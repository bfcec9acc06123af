"""The Python API behind the CLI: every command is one call here."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgemm.artifacts import check_writable_dir, run_directory, write_text
from edgemm.bench.latency import TimingSettings
from edgemm.bench.regression import Comparison, compare, gate, parse_fail_on
from edgemm.bench.report import plot, to_markdown, write_report
from edgemm.bench.runner import run_bench
from edgemm.bench.schema import BenchReport, json_schema
from edgemm.compress.pipeline import CompressResult
from edgemm.compress.pipeline import compress as run_compress
from edgemm.compress.quantizer import QUANTIZERS
from edgemm.compress.recipe import available_recipes, recipe_model
from edgemm.compress.stage import STAGES
from edgemm.data.datasets import DATASETS, load_split
from edgemm.errors import ConfigError, InputError
from edgemm.export.profiles import DEFAULT_PROFILE, available_profiles, default_profile, load_profile, profile_model
from edgemm.export.profiles import ExportProfile
from edgemm.export.target import EXPORT_TARGETS, ExportResult
from edgemm.export.validate import ValidationReport
from edgemm.export.validate import validate as run_validation
from edgemm.models.registry import ZOO, has_contract, resolve_model, with_data
from edgemm.registry import Registry
from edgemm.runtime import BACKENDS, load_session
from edgemm.runtime.evaluate import run_checked
from edgemm.runtime.memory import check_batch_fits
from edgemm.tensorrt.compat import CompatibilityReport, check_onnx

# What `edgemm list` shows, by the name a user types.
REGISTRIES: dict[str, Registry] = {"stages": STAGES, "quantizers": QUANTIZERS, "targets": EXPORT_TARGETS,
                                   "backends": BACKENDS, "models": ZOO, "datasets": DATASETS}


def export(model: str, *, target: str = "onnx", profile: str | None = None, out_dir: str | Path = "runs/export",
           weights: str | Path | None = None, data: str | None = None) -> ExportResult:
    """Export ``model`` for ``target`` with an export profile and validate it on ``data`` (default: the
    data the model records); the data reference is recorded in the artifact. ``profile`` defaults to the
    target's generic one (x86-cpu, tensorrt-gpu, torch-tensorrt-gpu). Returns an ``ExportResult``."""
    exporter = EXPORT_TARGETS.get(target)
    settings = load_profile(profile or default_profile(target))
    if settings.target != target:
        raise ConfigError(f"profile {settings.name!r} is for target {settings.target!r}, not {target!r}",
                          "pick a profile made for this target")
    with run_directory(out_dir) as folder:
        return exporter.export(with_data(resolve_model(model, weights), data), folder, settings)


def validate(candidate: str | Path, reference: str, *, profile: str = DEFAULT_PROFILE,
             weights: str | Path | None = None, data: str | None = None) -> ValidationReport:
    ref, exported = with_data(resolve_model(reference, weights), data), resolve_model(str(candidate))
    if exported.artifact_kind != "onnx" or ref.artifact_kind != "torch":
        raise ConfigError(f"validate compares an exported .onnx file with the PyTorch model it came from; got "
                          f"{exported.artifact_kind} {candidate} vs {ref.artifact_kind} {reference}",
                          "edgemm validate DIR/model.onnx --reference RUN_DIR_OR_FACTORY; two runs of one kind "
                          "compare side by side with `edgemm bench A B`")
    return run_validation(ref, exported, load_profile(profile).validation)


def bench(artifacts: Sequence[str], *, out_dir: str | Path | None = None, labels: Sequence[str] | None = None,
          progress: Callable[[str], None] | None = None, **options: Any) -> tuple[BenchReport, tuple[Path, Path] | None]:
    """Run the benchmark (see ``edgemm.bench.runner.run_bench`` for options); write JSON + Markdown + plots."""
    if out_dir is None:
        return run_bench(list(artifacts), labels=labels, progress=progress, **options), None
    with run_directory(out_dir) as folder:  # an unwritable --out fails before minutes of benchmarking
        report = run_bench(list(artifacts), labels=labels, progress=progress, **options)
        return report, write_report(report, folder)


def check_regressions(baseline: str | Path, report: BenchReport, fail_on: str,
                      out_dir: str | Path | None = None) -> Comparison:
    """Compare with a baseline report (verdict in ``out_dir/regression.md``); raises RegressionFound (exit 5),
    or ConfigError when nothing matches."""
    return gate(BenchReport.load(baseline), report, parse_fail_on(fail_on), str(baseline),
                Path(out_dir) / "regression.md" if out_dir else None)


def report(reports: Sequence[str | Path], out_dir: str | Path) -> tuple[Path, list[Path]]:
    """Re-render Markdown + plots from bench reports; with several, compare each with the first."""
    check_writable_dir(out_dir)
    loaded = [BenchReport.load(p) for p in reports]
    parts = [to_markdown(rep, title=str(path)) for path, rep in zip(reports, loaded)]
    for path, rep in zip(reports[1:], loaded[1:]):
        diff = compare(loaded[0], rep, {"p50_ms": 0.0, "p90_ms": 0.0, "accuracy": 0.0})
        lines = [f"- slower/worse: {d}" for d in diff.regressions] or ["- no change for the worse"]
        parts.append(f"### {path} vs {reports[0]}\n\n" + "\n".join(lines + [f"- {n}" for n in diff.notes()]))
    markdown = write_text(Path(out_dir) / "report.md", "\n\n".join(parts) + "\n")
    return markdown, plot(loaded, Path(out_dir))


def compress(model: str, recipe: str | Path | None = None, out_dir: str | Path = "runs/compress",
             **options: Any) -> CompressResult:
    """Run a recipe on ``model`` (see ``edgemm.compress.pipeline.compress`` for options)."""
    with run_directory(out_dir) as folder:
        return run_compress(model, recipe, folder, **options)


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from an .npz file; object arrays are refused (they would need unpickling)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"inputs {path} is a folder, not an .npz file", "give an .npz written by numpy.savez, "
                         "or the folder as --data")
    if not path.is_file():
        raise InputError(f"input file {path} does not exist", "give an .npz written by numpy.savez")
    if not zipfile.is_zipfile(path):  # numpy would try it as a pickle and say so, which misleads
        raise InputError(f"{path} is not an .npz file (not a zip archive)", "save inputs with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as err:
        raise InputError(f"{path} holds pickled objects ({err})", "save plain numeric arrays with numpy.savez") from None
    except Exception as err:  # zipfile.BadZipFile, OSError...
        raise InputError(f"{path} is not a readable .npz file ({err})", "save inputs with numpy.savez") from None


def data_rows(model: str, data: str, split: str = "test", rows: str = "0:4",
              weights: str | Path | None = None) -> dict[str, np.ndarray]:
    """Rows START:STOP of a split of ``data``, read as ``model``'s contract says (``predict --data``)."""
    start, colon, stop = rows.partition(":")
    try:
        window = slice(int(start or 0), (int(stop) if stop else None) if colon else int(start) + 1)  # "3": row 3
    except ValueError:
        raise ConfigError(f"--rows {rows!r} is not START:STOP", "e.g. --rows 0:4") from None
    if (window.start or 0) < 0 or (window.stop or 0) < 0:
        raise ConfigError(f"--rows {rows!r} counts from the end; rows here are 0, 1, 2, ...", "e.g. --rows 0:4")
    loaded = with_data(resolve_model(model, weights), data)
    part = load_split(loaded.spec.dataset, split, loaded.spec).for_inputs(loaded.spec.input_names).take(window)
    if not len(part):
        raise ConfigError(f"rows {rows} of split {split!r} are empty", "choose rows inside the split")
    return part.trimmed(loaded.spec).inputs


def predict(model: str, inputs: str | Path | dict[str, np.ndarray], *, weights: str | Path | None = None,
            backend: str | None = None, threads: int | None = None) -> dict[str, np.ndarray]:
    """Check ``inputs`` against the model contract, then run the model once."""
    loaded = resolve_model(model, weights)
    feed = inputs if isinstance(inputs, dict) else load_inputs(inputs)
    loaded.spec.check_inputs(feed)
    check_batch_fits(loaded, [len(next(iter(feed.values())))])
    return run_checked(load_session(loaded, backend, threads), feed, finite=True)


def components(kind: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """What is registered, what each declares, and whether it is usable here (``edgemm list``)."""
    kinds = [kind] if kind else list(REGISTRIES)
    unknown = [k for k in kinds if k not in REGISTRIES and k not in ("recipes", "profiles")]
    if unknown:
        raise ConfigError(f"nothing called {unknown[0]!r} to list",
                          f"choose one of {', '.join([*REGISTRIES, 'recipes', 'profiles'])}")
    listed = {k: [entry.summary() for entry in REGISTRIES[k]]
              + [{"name": name, "unavailable": why} for name, why in REGISTRIES[k].broken().items()]
              for k in kinds if k in REGISTRIES}
    if kind in ("recipes", None):
        listed["recipes"] = [{"name": r} for r in available_recipes()]
    if kind in ("profiles", None):
        listed["profiles"] = [{"name": p} for p in available_profiles()]
    return listed


SCHEMAS = {"recipe": lambda: recipe_model().model_json_schema(),
           "profile": lambda: profile_model().model_json_schema(by_alias=True), "report": json_schema}


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a recipe, an export profile or a bench report, as the registries make it now."""
    if name not in SCHEMAS:
        raise ConfigError(f"no schema called {name!r}", f"choose one of {', '.join(SCHEMAS)}")
    return SCHEMAS[name]()


__all__ = ["TimingSettings", "bench", "check_regressions", "components", "compress", "data_rows", "export",
           "load_inputs", "predict", "report", "schema", "validate"]


def profiles() -> list[ExportProfile]:
    """Every export profile found (./export_profiles, then the shipped ones), validated."""
    return [load_profile(name) for name in available_profiles()]


def inspect(model: str | Path, *, profile: str = "tensorrt-gpu") -> CompatibilityReport:
    """Will TensorRT take this ONNX graph under ``profile``? Every finding, with node, reason and fix."""
    loaded = resolve_model(str(model))
    if loaded.onnx_path is None:
        raise ConfigError(f"inspect checks an ONNX graph; {model} is a PyTorch model",
                          f"export it first: edgemm export {model} --target tensorrt --profile {profile}")
    settings = load_profile(profile)
    trt = getattr(settings, "tensorrt", None)
    if settings.target not in ("tensorrt", "torch-tensorrt") or trt is None:
        raise ConfigError(f"profile {settings.name!r} is for target {settings.target!r}, not TensorRT",
                          "pick a TensorRT profile (`edgemm profiles list`)")
    return check_onnx(loaded.onnx_path, trt, loaded.spec.axes if has_contract(loaded) else {})
