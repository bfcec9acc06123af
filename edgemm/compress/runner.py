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
from edgemm.artifacts import read_manifest, sha256_file, write_manifest
from edgemm.compress.recipe import DistillStage, PruneStage, QuantizeStage, Recipe
from edgemm.errors import GateFailed
from edgemm.export.profiles import ExportProfile
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


def _quantize_budget(config: QuantizeStage, ctx: Context) -> float:
    budget = ctx.recipe.gates.allowed_drop(ctx.reference_accuracy)
    return budget if config.max_accuracy_drop is None else min(budget, config.max_accuracy_drop / 100)


def run_quantize(config: QuantizeStage, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
    from edgemm.compress.calibration import calibration_feeds
    from edgemm.compress.fallback import quantize_with_fallback

    if config.backend == "inc":
        return run_quantize_inc(config, artifact, ctx)
    model = artifact.load()
    scheme = ctx.profile.quantization
    if config.calibration_method:
        scheme = scheme.model_copy(update={"calibration_method": config.calibration_method})
    feeds = calibration_feeds(model.spec, ctx.dataset, config.calibration_split, config.calibration_samples)
    budget = _quantize_budget(config, ctx)
    work = ctx.stage_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    outcome = quantize_with_fallback(
        artifact.path, work, config, scheme, feeds,
        evaluate=lambda p: ctx.accuracy(Artifact("onnx", _with_spec(p, model)), ctx.recipe.gates.split),
        min_accuracy=ctx.reference_accuracy - budget, log=ctx.log)
    final = _save_onnx(outcome.path, model, ctx.stage_dir / "model.onnx")
    shutil.rmtree(work, ignore_errors=True)
    return Artifact("onnx", final), {"scheme": scheme.model_dump(), "backend": config.backend, **outcome.to_dict()}


def run_quantize_inc(config: QuantizeStage, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
    """INC works on the PyTorch model (PT2E) and exports its int8 graph to ONNX Q/DQ."""
    import onnx

    from edgemm.compress.calibration import calibration_feeds
    from edgemm.compress.inc import quantize_inc
    from edgemm.export.onnx import to_onnx_proto
    from edgemm.train import evaluate

    model = artifact.load()
    feeds = calibration_feeds(model.spec, ctx.dataset, config.calibration_split, config.calibration_samples)
    gate_split = _gate_split(ctx, model)
    budget = _quantize_budget(config, ctx)
    tuned = quantize_inc(model, feeds, lambda graph: evaluate(graph, model.spec, gate_split),
                         tolerable_relative_loss=budget / max(ctx.reference_accuracy, 1e-9),
                         max_trials=config.fallback.max_tries + 1)
    onnx_path = ctx.stage_dir / "model.onnx"
    _save_onnx_proto(to_onnx_proto(model, ctx.profile.onnx.opset, module=tuned), model, onnx_path)
    accuracy = ctx.accuracy(Artifact("onnx", onnx_path))
    if accuracy < ctx.reference_accuracy - budget:  # INC returns its best model even when it missed
        onnx_path.rename(ctx.stage_dir / "model.rejected.onnx")
        raise GateFailed(f"INC int8 misses its accuracy gate: {100 * accuracy:.2f} % < required "
                         f"{100 * (ctx.reference_accuracy - budget):.2f} % after {config.fallback.max_tries + 1} "
                         "autotune trials", "raise fallback.max_tries, try backend: ort, or loosen the gate")
    ops = [n.op_type for n in onnx.load(str(onnx_path)).graph.node]
    return Artifact("onnx", onnx_path), {"backend": "inc", "quantize_linear_nodes": ops.count("QuantizeLinear")}


def _gate_split(ctx: Context, model: LoadedModel):
    from edgemm.data.datasets import load_split

    return load_split(ctx.dataset, ctx.recipe.gates.split).for_inputs(model.spec.input_names)


def _save_onnx(source: Path, model: LoadedModel, target: Path) -> Path:
    import onnx

    return _save_onnx_proto(onnx.load(str(source)), model, target)


def _save_onnx_proto(proto, model: LoadedModel, target: Path) -> Path:
    """Write a stage's ONNX atomically, stamped with the spec so it loads like any edgemm ONNX."""
    import onnx

    from edgemm.artifacts import atomic_path

    onnx.helper.set_model_props(proto, {SPEC_METADATA_KEY: model.spec.to_json()})
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
    return target


def _with_spec(path: Path, model: LoadedModel) -> Path:
    """Stamp the spec into a candidate so it loads like any edgemm ONNX file."""
    return _save_onnx(path, model, path)


STAGES: dict[str, Callable] = {"prune": run_prune, "distill": run_distill, "export": run_export,
                                "quantize": run_quantize}


def consumes(config) -> str:
    """The artifact kind a stage reads: INC quantizes the PyTorch model, other quantizers the ONNX graph."""
    if isinstance(config, QuantizeStage):
        return "torch" if config.backend == "inc" else "onnx"
    return "torch"


def produces(config) -> str:
    return "onnx" if isinstance(config, QuantizeStage) else "torch"


def plan(recipe: Recipe) -> list[tuple[str, object]]:
    """Recipe stages with the ONNX export inserted where the artifact kind changes (and at the end)."""
    steps, kind = [], "torch"
    for stage in recipe.stages:
        if consumes(stage) == "onnx" and kind == "torch":
            steps.append(("export", None))
        steps.append((stage.stage, stage))
        kind = produces(stage)
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
    output, metrics = STAGES[name](config, artifact, ctx)
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
