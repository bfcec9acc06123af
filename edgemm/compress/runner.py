"""Run a recipe: stages in order, each handing the next an artifact on disk plus a manifest.

``out_dir/NN-stage/`` holds each stage's artifact and ``manifest.json``; a stage
whose manifest records the same key (input artifact hash + stage config +
target profile) is reused, anything else is redone from a clean folder — except a
resumable stage (distillation) interrupted with the same key, which keeps its
checkpoints and continues. The deployable model appears in ``out_dir/final/`` only
when every gate holds.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from typing import Any, Callable, get_args
from pathlib import Path

from edgemm import __version__
from edgemm.artifacts import read_manifest, write_json, write_manifest
from edgemm.compress.recipe import RecipeBase
from edgemm.compress.stage import STAGES, Artifact, Context, StageConfig, artifact_chain
from edgemm.data.datasets import data_fingerprint
from edgemm.errors import ConfigError, GateFailed
from edgemm.spec import Modality, ModelSpec

IN_PROGRESS = "in_progress.json"  # a started stage's key; with no manifest beside it the stage is unfinished


# Recipe keys that name towers, and what each accepts besides the contract's towers: (description, names).
_MODULE_PATHS = ("a module path", lambda module: {n for n, _ in module.named_modules() if n} if module else set())
_MODULE_PATHS_OR_FUSION = ("a module path or 'fusion'", lambda module: _MODULE_PATHS[1](module) | {"fusion"})
TOWER_KEYS: dict[str, tuple[str, Callable[[Any], set[str]]]] = {
    "towers": _MODULE_PATHS, "drop_layers": _MODULE_PATHS,
    "freeze": _MODULE_PATHS_OR_FUSION, "tower_lr": _MODULE_PATHS_OR_FUSION,  # training the head or not
    "tower_modes": ("a modality or 'fusion'", lambda _m: set(get_args(Modality)) | {"fusion"}),  # any modality:
    "keep_float": ("'fusion'", lambda _m: {"fusion"}),  # a built-in recipe serves models without that tower
    "modality_dropout": ("", lambda _m: set()),  # it blanks inputs: only the contract's towers have them
    "unlabelled_blank": ("", lambda _m: set()),
    "size": ("", lambda _m: set()),  # resize: image inputs belong to the contract's towers
}


def check_recipe(recipe: RecipeBase, dataset: str, splits: tuple[str, ...], spec: ModelSpec | None = None,
                 module: Any = None) -> None:
    """Before anything runs: every stage (and quantizer) is usable here, every split it reads exists, and
    every tower a stage names is one of the model's (seconds of tracing and export later, it would be late)."""
    wanted = {recipe.gates.split: "gates.split"}
    for index, config in enumerate(recipe.stages):
        stage = STAGES.get(config.stage)
        stage.check_usable(config)
        if spec is not None:
            _check_tower_keys(index, config, spec, module)
            stage.check_model(config, spec, dataset, recipe.gates.split, module)
        wanted.update({split: f"stages.{index} ({config.stage})" for split in stage.splits_read(config)})
    missing = {split: who for split, who in wanted.items() if split not in splits}
    if missing:
        what = ", ".join(f"{split!r} (read by {who})" for split, who in missing.items())
        raise ConfigError(f"dataset {dataset!r} has no split {what}; it has {list(splits)}",
                          "point the recipe at splits the dataset has, or give a dataset with them (--data)")


def _check_tower_keys(index: int, config: StageConfig, spec: ModelSpec, module: Any) -> None:
    for key, (also, extra_names) in TOWER_KEYS.items():
        named = set(getattr(config, key, None) or [])
        unknown = sorted(named - set(spec.towers) - (extra_names(module) if named else set()))
        if unknown:
            raise ConfigError(f"stages.{index} ({config.stage}) {key} names {unknown}: not a tower of model "
                              f"{spec.name!r}" + (f" (nor {also})" if also else ""),
                              f"its towers are {sorted(spec.towers)} (`edgemm info MODEL`)")


def plan(recipe: RecipeBase) -> list[tuple[str, StageConfig | None]]:
    """Recipe stages with the ONNX export inserted where the artifact kind changes (and at the end)."""
    steps: list[tuple[str, StageConfig | None]] = []
    kind = "torch"
    for config, needs, makes in artifact_chain(recipe.stages):
        if needs == "onnx" and kind == "torch":
            steps.append(("export", None))
        steps.append((config.stage, config))
        kind = makes
    if kind == "torch":
        steps.append(("export", None))
    return steps


def _stage_key(name: str, config: StageConfig | None, artifact: Artifact, ctx: Context) -> str:
    """What a stage's output depends on. The profile as written (not its defaults: registering a target
    adds a default section to every profile), and the gates for stages that work to them."""
    blob = json.dumps({"stage": name, "config": config.model_dump() if config else None, "input": artifact.sha256(),
                       "profile": ctx.profile.model_dump(exclude_unset=True), "dataset": data_fingerprint(ctx.dataset),
                       "gates": ctx.gates.model_dump(exclude={"decision", "ablation"})  # read by the final gate only
                       if STAGES.get(name, usable=False).uses_gates else None,
                       "edgemm": __version__, **_data_read(name, config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _data_read(name: str, config: StageConfig | None) -> dict:
    """Fingerprints of the data a stage reads besides the run's (absent when none: older keys stay valid)."""
    refs = STAGES.get(name, usable=False).data_read(config)
    return {"data_read": [data_fingerprint(ref) for ref in refs]} if refs else {}


def _check_stage_gate(stage, label: str, config: StageConfig | None, metrics: dict, ctx: Context, gated: bool) -> None:
    """The stage's own max_accuracy_drop, and the recipe's budget once no later stage can win accuracy back."""
    limit = getattr(config, "max_accuracy_drop", None)
    drop = metrics["accuracy_drop_points"]
    if limit is not None and drop > limit + 1e-9:
        raise GateFailed(f"stage {label} dropped {ctx.gates.split} accuracy by {drop:.2f} points (its budget: {limit})",
                         stage.gate_fix)
    allowed = 100 * ctx.allowed_drop(None)
    if gated and drop > allowed + 1e-9:
        raise GateFailed(f"stage {label} dropped {ctx.gates.split} accuracy by {drop:.2f} points, beyond the recipe's "
                         f"budget of {allowed:.2f}, and no later stage trains to win it back", stage.gate_fix)


def _score(output: Artifact, metrics: dict, ctx: Context) -> None:
    """The stage's output on the gate split: what its gate reads (the split is recorded with the figure)."""
    accuracy = ctx.accuracy(output)
    metrics.update(accuracy=accuracy, gate_split=ctx.gates.split,
                   accuracy_drop_points=round(100 * (ctx.reference_accuracy - accuracy), 3))


def _output_of(stage_dir: Path, manifest: dict) -> Artifact:
    kind = manifest["metrics"]["artifact_kind"]
    return Artifact(kind, stage_dir / "model.onnx" if kind == "onnx" else stage_dir)


def _prepare_folder(stage_dir: Path, key: str, resumable: bool) -> bool:
    """A clean folder for the stage, or (resumable stage, same key) the interrupted one; True when resuming."""
    started = stage_dir / IN_PROGRESS
    if resumable and started.is_file() and json.loads(started.read_text()).get("key") == key:
        return True
    shutil.rmtree(stage_dir, ignore_errors=True)  # an interrupted or outdated stage starts clean
    stage_dir.mkdir(parents=True)
    write_json(started, {"key": key})
    return False


def stage_budgets(steps: list[tuple[str, StageConfig | None]]) -> list[bool]:
    """For each step: whether the recipe's accuracy budget applies right after it. It does once no later
    stage trains: from there accuracy only goes down, so a stage that already misses stops the run."""
    return [not any(STAGES.get(name, usable=False).recovers for name, _ in steps[i + 1:]) for i in range(len(steps))]


def run_stage(index: int, name: str, config: StageConfig | None, artifact: Artifact,
              ctx: Context, gated: bool = False) -> tuple[Artifact, dict]:
    stage = STAGES.get(name)
    stage_dir = ctx.out_dir / f"{index:02d}-{name}"
    key = _stage_key(name, config, artifact, ctx)
    manifest = read_manifest(stage_dir)
    if manifest and manifest.get("complete") and manifest["config"].get("key") == key:
        ctx.log(f"{stage_dir.name}: unchanged inputs, reusing")
        output, metrics = _output_of(stage_dir, manifest), manifest["metrics"]
        if metrics.get("gate_split") != ctx.gates.split:  # scored for another recipe's gate split: score it again
            _score(output, metrics, ctx)
        _check_stage_gate(stage, stage_dir.name, config, metrics, ctx, gated)  # this recipe's gates
        return output, metrics
    resuming = _prepare_folder(stage_dir, key, stage.resumable)
    ctx.stage_dir = stage_dir
    ctx.log(f"{stage_dir.name}: {'resuming an interrupted run' if resuming else 'running'}")
    start = time.perf_counter()
    output, metrics = stage.run(config, artifact, ctx)
    metrics.update(artifact_kind=output.kind, seconds=round(time.perf_counter() - start, 1))
    _score(output, metrics, ctx)
    ctx.log(f"{stage_dir.name}: {ctx.gates.split} accuracy {100 * metrics['accuracy']:.2f} % "
            f"(reference {100 * ctx.reference_accuracy:.2f} %)")
    (stage_dir / IN_PROGRESS).unlink(missing_ok=True)
    files = [p.name for p in stage_dir.iterdir() if p.is_file() and p.name != "manifest.json"]
    write_manifest(stage_dir, kind=f"stage:{name}", inputs={"artifact": str(artifact.path), "sha256": artifact.sha256()},
                   config={"key": key, "stage": config.model_dump() if config else None,
                           "profile": ctx.profile.name}, metrics=metrics, artifacts=sorted(files))
    # Checked after the manifest: a stage that ran to its end is reused by the next recipe (one that distils
    # after it, say) instead of being redone; reuse checks the gates of the recipe that reuses it.
    _check_stage_gate(stage, stage_dir.name, config, metrics, ctx, gated)
    return output, metrics
