"""The Python API behind the CLI: every command is one call here."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgemm.errors import BackendUnavailable, ConfigError, InputError


def export(model: str, *, target: str = "onnx", profile: str = "x86-cpu", out_dir: str | Path = "runs/export",
           weights: str | Path | None = None):
    """Export ``model`` for ``target`` with an export profile; returns an ``ExportResult``."""
    from edgemm.export.onnx import export_onnx
    from edgemm.export.profiles import load_profile
    from edgemm.models.registry import resolve_model

    if target != "onnx":
        raise BackendUnavailable(f"target {target!r} is not available in this version of edgemm",
                                 "export with --target onnx; TensorRT engines are built from that ONNX file")
    settings = load_profile(profile)
    if settings.target != target:
        raise ConfigError(f"profile {settings.name!r} is for target {settings.target!r}, not {target!r}",
                          "pick a profile made for this target")
    return export_onnx(resolve_model(model, weights), out_dir, settings)


def validate(candidate: str | Path, reference: str, *, profile: str = "x86-cpu", weights: str | Path | None = None):
    from edgemm.export.onnx import validate as run_validation
    from edgemm.export.profiles import load_profile
    from edgemm.models.registry import resolve_model

    ref = resolve_model(reference, weights)
    return run_validation(ref, resolve_model(str(candidate)), load_profile(profile).validation)


def bench(artifacts: list[str], *, out_dir: str | Path | None = None, progress: Callable[[str], None] | None = None,
          **options) -> tuple[dict, tuple[Path, Path] | None]:
    """Run the benchmark (see ``edgemm.bench.runner.run_bench`` for options); write JSON + Markdown."""
    from edgemm.bench.report import write_report
    from edgemm.bench.runner import run_bench

    report = run_bench(artifacts, progress=progress, **options)
    return report, (write_report(report, out_dir) if out_dir else None)


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from an .npz file; object arrays are refused (they would need unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} does not exist", "give an .npz written by numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as err:
        raise InputError(f"{path} holds pickled objects ({err})", "save plain numeric arrays with numpy.savez") from None
    except Exception as err:  # zipfile.BadZipFile, OSError...
        raise InputError(f"{path} is not a readable .npz file ({err})", "save inputs with numpy.savez") from None


def predict(model: str, inputs: str | Path | dict[str, np.ndarray], *, weights: str | Path | None = None,
            backend: str | None = None) -> dict[str, np.ndarray]:
    """Check ``inputs`` against the model contract, then run the model once."""
    from edgemm.bench.backends import default_backend, get_backend
    from edgemm.models.registry import resolve_model

    loaded = resolve_model(model, weights)
    feed = inputs if isinstance(inputs, dict) else load_inputs(inputs)
    loaded.spec.check_inputs(feed)
    return get_backend(backend or default_backend(loaded)).load(loaded).run(feed)
