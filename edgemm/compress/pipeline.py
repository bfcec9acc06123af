"""``edgemm compress``: input model -> recipe stages -> gates -> ``final/`` + side-by-side report."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm.artifacts import atomic_path, write_json, write_manifest, write_text
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.bench.runner import run_bench
from edgemm.bench.schema import BenchReport
from edgemm.compress.gates import Gates, check_gates
from edgemm.compress.recipe import RecipeBase, load_recipe
from edgemm.compress.runner import check_recipe, plan, run_stage, stage_budgets
from edgemm.compress.stage import Artifact, Context
from edgemm.data.datasets import find_source, load_split
from edgemm.data.readers import UNLABELLED
from edgemm.errors import ConfigError, GateFailed, InputError
from edgemm.export.profiles import load_profile
from edgemm.models.registry import resolve_model, save_model, with_data
from edgemm.runtime.memory import check_batch_sizes
from edgemm.runtime.memory_guard import memory_guard
from edgemm.spec import ModelSpec

# What bounds a compress run's memory: on the 26 M-parameter real model, the quantize fallback's per-node
# ranking and calibration made the peaks (23 GB and 6.5 GB before their bounds), distillation less.
MEMORY_FIX = ("lower the quantize stage's calibration_samples or use fallback granularity [tower] (the per-node "
              "ranking holds activations), lower the distill stage's batch_size, or raise --max-memory")



@dataclass
class CompressResult:
    out_dir: Path
    final: Path
    report: BenchReport
    gates: dict
    stages: list[dict]
    labels: dict[str, str]  # result id -> (a) torch fp32 eager / (b) ONNX Runtime fp32 / (c) compressed


def compress(model: str, recipe: str | Path | RecipeBase | None = None, out_dir: str | Path = "runs/compress", *,
             data: str | None = None, weights: str | Path | None = None, threads: int | None = 1, batch_sizes: tuple[int, ...] = (1, 16),
             timing: TimingSettings | None = None, log: Callable[[str], None] = print,
             progress: Callable | None = None, profile: str | None = None,
             max_memory: int | None = None) -> CompressResult:
    """``profile`` replaces the recipe's ``target`` (the export profile whose scheme, round_to and
    validation the stages read), so one recipe serves a CPU and a Jetson. ``max_memory`` (bytes): the
    run stops with the step named when its resident memory passes it (``runtime/memory_guard.py``)."""
    recipe = recipe if isinstance(recipe, RecipeBase) else load_recipe(recipe)
    if profile is not None:
        recipe = recipe.model_copy(update={"target": profile})
    profile = load_profile(recipe.target)
    teacher = resolve_model(model, weights)
    if teacher.module is None:
        raise ConfigError(f"{model} is an ONNX file; compress starts from a PyTorch model",
                          "give the trained model (run directory, module:factory with --weights, zoo name)")
    dataset = with_data(teacher, data).spec.dataset  # recorded in every artifact of the run
    if not dataset:
        raise ConfigError(f"model {teacher.spec.name!r} names no data for calibration and gates",
                          "pass --data: a data folder, an .npz, module:function or a registered name "
                          "(README: 'Compress your own model')")
    splits = find_source(dataset).splits_for(dataset)
    check_recipe(recipe, dataset, splits, teacher.spec, teacher.module)
    scored = labelled_report_splits(dataset, splits, recipe, teacher.spec, log)
    noise = recipe.gates.resolution_warning(check_data(teacher.spec, dataset, recipe.gates.split))
    if noise:
        log(f"warning: {noise}")
    check_batch_sizes(teacher, batch_sizes)  # the final comparison's batches, checked before the first stage
    if not teacher.trained:
        log("warning: the input model's weights are its factory's initial ones (no --weights, and its contract "
            "does not say trained=True): accuracy figures will be meaningless")
    out_dir = Path(out_dir)
    for stale in ("final", "manifest.json", "gate_report.json", "gate_report.md", "report.json", "report.md"):
        path = out_dir / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    with memory_guard(max_memory, MEMORY_FIX) as guard:
        guard.step = "scoring the input model"
        ctx = Context(recipe.gates, profile, teacher, dataset, out_dir, threads, log, progress)
        source = Artifact("torch", out_dir / "00-input")
        save_model(teacher, source.path)  # the run is self-contained; same bytes give the same stage keys
        blanked = ablated_towers(recipe.gates, teacher.spec)
        guard.step = "scoring the input model" + (" (and with each tower blanked)" if blanked else "")
        ctx.reference_correct, *by_tower = ctx.correct(source, blanked=blanked)
        ctx.reference_blanked = blanked_accuracies(blanked, by_tower, "input model", log)
        log(f"input model: {recipe.gates.split} accuracy {100 * ctx.reference_accuracy:.2f} %")
        guard.step = "stage 01-export"
        reference_onnx, _ = run_stage(1, "export", None, source, ctx)
        artifact, stages, steps = source, [], plan(recipe)
        if steps[0][0] == "export":  # the input's export is the reference export: do not redo it
            artifact, steps = reference_onnx, steps[1:]
        for index, ((name, config), gated) in enumerate(zip(steps, stage_budgets(steps)), start=2):
            guard.step = f"stage {index:02d}-{name}"
            try:
                artifact, metrics = run_stage(index, name, config, artifact, ctx, gated)
            except GateFailed as err:  # a stage's own gate: the report says how far the run got
                write_json(out_dir / "gate_report.json", {"failed_stage": f"{index:02d}-{name}", "error": err.args[0],
                                                          "fix": err.hint, "stages": stages})
                raise
            stages.append({"stage": name, **{k: v for k, v in metrics.items() if k != "history"}})
        log("benchmark: torch fp32 eager vs ORT fp32 vs compressed")
        guard.step = "the final benchmark"
        refs = [str(source.path), str(reference_onnx.path), str(artifact.path)]
        report = run_bench(refs, batch_sizes=batch_sizes, threads=threads, splits=scored,
                           dataset=dataset, timing=timing or TimingSettings.for_compress())
        torch_fp32, ort_fp32, final = (report.for_artifact(ref) for ref in refs)
        guard.step = "scoring the compressed model for the gates"
        final_correct, *by_tower = ctx.correct(artifact, blanked=blanked)
        gates = check_gates(recipe.gates, ctx.reference_correct, final_correct, report, torch_fp32.id, ort_fp32.id,
                            final.id, ctx.reference_blanked,
                            blanked_accuracies(blanked, by_tower, "compressed model", log))
        labels = {torch_fp32.id: "(a) torch fp32 eager", ort_fp32.id: "(b) ONNX Runtime fp32",
                  final.id: f"(c) compressed: {recipe.name}"}
        write_text(out_dir / "report.json", report.to_json())
        write_text(out_dir / "report.md", comparison_markdown(report, gates, stages, recipe, labels))
        if not gates["passed"]:
            write_json(out_dir / "gate_report.json", {"gates": gates, "stages": stages})
            raise GateFailed(f"recipe {recipe.name!r} missed its gates: {'; '.join(gates['failures'])}",
                             f"see {out_dir / 'report.md'}; loosen the recipe's gates or compress less")
    final_path = out_dir / "final" / "model.onnx"  # written once the guard has let the whole run through
    with atomic_path(final_path) as tmp:
        shutil.copyfile(artifact.path, tmp)
    write_manifest(out_dir, kind="compress", inputs={"model": model, "dataset": dataset},
                   config={"recipe": recipe.model_dump(mode="json"),
                           "profile": profile.model_dump(mode="json", by_alias=True)},
                   metrics={"gates": gates, "stages": stages}, artifacts=["final/model.onnx", "report.json"])
    return CompressResult(out_dir, final_path, report, gates, stages, labels)


def check_data(spec, dataset: str, split: str) -> int:
    """Before the first stage: the data gives every input the model takes, in the contract's dtypes and shapes;
    returns the split's size."""
    sample = load_split(dataset, split, spec)
    if not len(sample):
        raise ConfigError(f"split {split!r} of {dataset} is empty", "give the split some rows")
    if (np.asarray(sample.labels) == UNLABELLED).any():
        raise InputError(f"split {split!r} of {dataset} has rows without a label: the gates score accuracy on it",
                         "label every row of it, or gate on a labelled split (gates.split)")
    try:
        spec.check_inputs(sample.for_inputs(spec.input_names).head(2).inputs)
    except InputError as err:
        raise InputError(f"data {dataset}, split {split!r}: {err.args[0]}", err.hint) from None
    return len(sample)


def labelled_report_splits(dataset: str, splits: tuple[str, ...], recipe: RecipeBase, spec: ModelSpec,
                           log: Callable[[str], None]) -> tuple[str, ...]:
    """The report splits accuracy can be scored on; a split with unlabelled rows is left out, and said so. The
    run's own unlabelled split must not be a held-out one: the student would train on what it is scored on."""
    candidates = report_splits(splits, recipe)
    source = find_source(dataset)
    scored = tuple(s for s in candidates if source.labelled(dataset, s, spec))
    pools = {c.unlabelled_split for c in recipe.stages if getattr(c, "unlabelled_split", None)
             and not getattr(c, "unlabelled_data", None)}
    held_out = sorted(pools & (set(scored) | {recipe.gates.split, "val"}))
    if held_out:
        raise ConfigError(f"distill.unlabelled_split names {held_out}: a held-out split of the run's data, which the "
                          "gates or the report score", "distil on rows kept apart for it (a split of their own)")
    for split in sorted(set(candidates) - set(scored)):
        log(f"note: split {split!r} has rows without a label: left out of the report")
    return scored or (recipe.gates.split,)


def report_splits(splits: tuple[str, ...], recipe: RecipeBase) -> tuple[str, ...]:
    """The side-by-side report scores the held-out splits: all but training and the gates' own."""
    return tuple(s for s in splits if s not in ("train", recipe.gates.split)) or (recipe.gates.split,)


def ablated_towers(gates: Gates, spec: ModelSpec) -> tuple[str, ...]:
    """The towers the gate split is scored without (none for a one-tower model: nothing would be left)."""
    towers = tuple(spec.towers)
    return towers if gates.ablation != "off" and len(towers) > 1 else ()


def blanked_accuracies(towers: tuple[str, ...], scores: list[np.ndarray | None], model: str,
                       log: Callable[[str], None]) -> dict[str, float]:
    """Tower -> accuracy with it blanked; a tower whose blanking gave non-finite outputs is named and left out."""
    for tower, score in zip(towers, scores):
        if score is None:
            log(f"warning: with {tower} blanked the {model}'s outputs are not finite: that tower's absence is not "
                f"scored (gates.ablation: off silences this)")
    return {t: float(c.mean()) for t, c in zip(towers, scores) if c is not None}


def ablation_markdown(gates: dict) -> str:
    rows = gates.get("ablation") or {}
    if not rows:
        return ""
    lines = "".join(f"| {t} | {100 * r['reference']:.1f} % | {100 * r['final']:.1f} % | "
                    f"{100 * (r['final'] - r['reference']):+.1f} |\n" for t, r in sorted(rows.items()))
    return (f"\n{gates['split']} accuracy with one tower's inputs blanked (its modality missing in every sample):\n\n"
            f"| tower blanked | input model | compressed | change (pts) |\n|---|---|---|---|\n{lines}")


def paired_note(gates: dict) -> str:
    """What the gate's drop rests on: samples changed and the 95 % interval (reports written before it: none)."""
    paired = gates.get("paired")
    if not paired:
        return ""
    low, high = paired["drop_ci95_points"]
    return (f"; {paired['worse']} of {paired['samples']} samples got worse, {paired['better']} better; drop 95 % "
            f"interval [{low:.2f}, {high:.2f}] pts, gate decides on the "
            f"{'upper end' if gates.get('decision') == 'confident' else 'observed drop'}")


def comparison_markdown(report: BenchReport, gates: dict, stages: list[dict], recipe: RecipeBase,
                        labels: dict[str, str]) -> str:
    table = to_markdown(report, labels, title=f"edgemm compress: {recipe.name}")
    verdict = "passed" if gates["passed"] else "FAILED: " + "; ".join(gates["failures"])
    stage_lines = "\n".join(f"- `{s['stage']}`: {gates['split']} accuracy {100 * s['accuracy']:.2f} % "
                            f"({s['accuracy_drop_points']:+.2f} pts drop), {s['seconds']} s" for s in stages)
    return (f"{table}\n"
            f"**Gates ({gates['split']} split): {verdict}.** Accuracy {100 * gates['reference_accuracy']:.2f} % → "
            f"{100 * gates['final_accuracy']:.2f} % (allowed drop {100 * gates['allowed_drop']:.2f} pts"
            f"{paired_note(gates)}); "
            f"batch-{gates['batch_size']} speed-up {gates['speedup_vs_torch_eager']:.2f}× vs torch eager, "
            f"{gates['speedup_vs_ort_fp32']:.2f}× vs ORT fp32.\n"
            + "".join(f"\n> ⚠️ {w}\n" for w in gates.get("warnings", []))
            + ablation_markdown(gates)
            + f"\nStages:\n{stage_lines}\n")
