"""Run a recipe: stages in order, each handing the next an artifact on disk plus a manifest.

``out_dir/NN-stage/`` holds each stage's artifact and ``manifest.json``; a stage
whose manifest records the same key (input artifact hash + stage config +
target profile) is reused, anything else is redone from a clean folder. The
deployable model appears in ``out_dir/final/`` only when every gate holds.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgemm import __version__
from edgemm.artifacts import read_manifest, sha256_file, write_json, write_manifest
from edgemm.compress.recipe import DistillStage, PruneStage, QuantizeStage, Recipe
from edgemm.errors import ConfigError, GateFailed
from edgemm.export.profiles import ExportProfile, load_profile
from edgemm.models.registry import MODEL_JSON, SPEC_METADATA_KEY, WEIGHTS, LoadedModel, resolve_model

Log = Callable[[str], None]


@dataclass
class Artifact:
    kind: str  # "torch" (model directory) or "onnx" (file)
    path: Path

    def sha256(self) -> str:
        if self.kind == "onnx":
            return sha256_file(self.path)
        return hashlib.sha256((sha256_file(self.path / WEIGHTS) + sha256_file(self.path / MODEL_JSON)).encode()).hexdigest()

    def load(self) -> LoadedModel:
        return resolve_model(str(self.path))


@dataclass
class Context:
    recipe: Recipe
    profile: ExportProfile
    teacher: LoadedModel
    dataset: str
    out_dir: Path
    threads: int | None
    log: Log
    progress: Callable | None = None
    reference_accuracy: float = 0.0
    stage_dir: Path = field(default_factory=Path)

    def accuracy(self, artifact: Artifact, split: str | None = None) -> float:
        from edgemm.bench.backends import default_backend, get_backend
        from edgemm.bench.runner import session_accuracy

        model = artifact.load()
        session = get_backend(default_backend(model)).load(model, self.threads)
        return session_accuracy(session, model.spec, self.dataset, split or self.recipe.gates.split)


# -- stages: (config, input artifact, context) -> (output artifact, metrics) ---------------------
def run_prune(config: PruneStage, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
    from edgemm.compress.prune import prune
    from edgemm.models.registry import save_model

    model = artifact.load()
    metrics = prune(model, config, config.round_to or ctx.profile.pruning.round_to)
    save_model(model, ctx.stage_dir)
    return Artifact("torch", ctx.stage_dir), metrics


def run_distill(config: DistillStage, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
    from edgemm.compress.distill import distill
    from edgemm.models.registry import save_model

    student = artifact.load()
    progress = (lambda d, t, _m: ctx.progress("distill", d, t)) if ctx.progress else None
    result = distill(student, ctx.teacher, config, ctx.dataset, ctx.stage_dir / "checkpoint", progress)
    save_model(student, ctx.stage_dir)
    shutil.rmtree(ctx.stage_dir / "checkpoint", ignore_errors=True)
    return Artifact("torch", ctx.stage_dir), {"best_val_accuracy": result.best_val_accuracy,
                                              "epochs": result.epochs_run, "stopped_early": result.stopped_early,
                                              "resumed_from_epoch": result.resumed_from_epoch,
                                              "history": result.history}


def run_export(config: None, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
    from edgemm.export.onnx import export_onnx

    result = export_onnx(artifact.load(), ctx.stage_dir, ctx.profile)
    return Artifact("onnx", result.onnx_path), {"nodes": result.nodes_simplified,
                                                "max_abs_error": max(c.max_abs_error for c in result.validation.checks)}


def run_quantize(config: QuantizeStage, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
    import onnx

    from edgemm.compress.calibration import calibration_feeds
    from edgemm.compress.fallback import quantize_with_fallback

    model = artifact.load()
    scheme = ctx.profile.quantization
    if config.calibration_method:
        scheme = scheme.model_copy(update={"calibration_method": config.calibration_method})
    feeds = calibration_feeds(model.spec, ctx.dataset, config.calibration_split, config.calibration_samples)
    budget = ctx.recipe.gates.allowed_drop(ctx.reference_accuracy)
    if config.max_accuracy_drop is not None:
        budget = min(budget, config.max_accuracy_drop / 100)
    work = ctx.stage_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    outcome = quantize_with_fallback(
        artifact.path, work, config, scheme, feeds,
        evaluate=lambda p: ctx.accuracy(Artifact("onnx", _with_spec(p, model)), ctx.recipe.gates.split),
        min_accuracy=ctx.reference_accuracy - budget, log=ctx.log)
    final = ctx.stage_dir / "model.onnx"
    proto = onnx.load(str(outcome.path))
    onnx.helper.set_model_props(proto, {SPEC_METADATA_KEY: model.spec.to_json(), "edgemm.stage": "quantize"})
    from edgemm.artifacts import atomic_path
    with atomic_path(final) as tmp:
        onnx.save(proto, str(tmp))
    shutil.rmtree(work, ignore_errors=True)
    return Artifact("onnx", final), {"scheme": scheme.model_dump(), "backend": config.backend, **outcome.to_dict()}


def _with_spec(path: Path, model: LoadedModel) -> Path:
    """Stamp the spec into a candidate so it loads like any edgemm ONNX file."""
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {SPEC_METADATA_KEY: model.spec.to_json()})
    onnx.save(proto, str(path))
    return path


STAGES: dict[str, tuple[str, Callable]] = {  # name -> (artifact kind it consumes, function)
    "prune": ("torch", run_prune),
    "distill": ("torch", run_distill),
    "export": ("torch", run_export),
    "quantize": ("onnx", run_quantize),
}


def plan(recipe: Recipe) -> list[tuple[str, object]]:
    """Recipe stages with the ONNX export inserted where the artifact kind changes (and at the end)."""
    steps, kind = [], "torch"
    for stage in recipe.stages:
        if STAGES[stage.stage][0] == "onnx" and kind == "torch":
            steps.append(("export", None))
            kind = "onnx"
        steps.append((stage.stage, stage))
    if kind == "torch":
        steps.append(("export", None))
    return steps


def _stage_key(name: str, config, artifact: Artifact, ctx: Context) -> str:
    blob = json.dumps({"stage": name, "config": config.model_dump() if config else None, "input": artifact.sha256(),
                       "profile": ctx.profile.model_dump(), "dataset": ctx.dataset, "edgemm": __version__},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _output_of(stage_dir: Path, manifest: dict) -> Artifact:
    kind = manifest["metrics"]["artifact_kind"]
    return Artifact(kind, stage_dir / "model.onnx" if kind == "onnx" else stage_dir)


def run_stage(index: int, name: str, config, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
    stage_dir = ctx.out_dir / f"{index:02d}-{name}"
    key = _stage_key(name, config, artifact, ctx)
    manifest = read_manifest(stage_dir)
    if manifest and manifest.get("complete") and manifest["config"].get("key") == key:
        ctx.log(f"{stage_dir.name}: unchanged inputs, reusing")
        return _output_of(stage_dir, manifest), manifest["metrics"]
    shutil.rmtree(stage_dir, ignore_errors=True)  # an interrupted or outdated stage starts clean
    stage_dir.mkdir(parents=True)
    ctx.stage_dir = stage_dir
    ctx.log(f"{stage_dir.name}: running")
    start = time.perf_counter()
    output, metrics = STAGES[name][1](config, artifact, ctx)
    accuracy = ctx.accuracy(output)
    metrics.update(artifact_kind=output.kind, accuracy=accuracy, seconds=round(time.perf_counter() - start, 1),
                   accuracy_drop_points=round(100 * (ctx.reference_accuracy - accuracy), 3))
    ctx.log(f"{stage_dir.name}: {ctx.recipe.gates.split} accuracy {100 * accuracy:.2f} % "
            f"(reference {100 * ctx.reference_accuracy:.2f} %)")
    limit = getattr(config, "max_accuracy_drop", None)
    if limit is not None and 100 * (ctx.reference_accuracy - accuracy) > limit:
        raise GateFailed(f"stage {stage_dir.name} dropped accuracy by {metrics['accuracy_drop_points']:.2f} points "
                         f"(budget {limit})", "lower the stage's ratio or raise its max_accuracy_drop")
    files = [p.name for p in stage_dir.iterdir() if p.is_file() and p.name != "manifest.json"]
    write_manifest(stage_dir, kind=f"stage:{name}", inputs={"artifact": str(artifact.path), "sha256": artifact.sha256()},
                   config={"key": key, "stage": config.model_dump() if config else None,
                           "profile": ctx.profile.name}, metrics=metrics, artifacts=sorted(files))
    return output, metrics
