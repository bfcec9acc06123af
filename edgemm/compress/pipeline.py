"""``edgemm compress``: input model -> recipe stages -> gates -> ``final/`` + side-by-side report."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgemm.artifacts import atomic_path, write_json, write_manifest, write_text
from edgemm.compress.recipe import Recipe, load_recipe
from edgemm.compress.runner import Artifact, Context, plan, run_stage
from edgemm.errors import ConfigError, GateFailed
from edgemm.export.profiles import load_profile
from edgemm.models.registry import resolve_model, save_model

REPORT_SPLITS = ("test", "ood")


@dataclass
class CompressResult:
    out_dir: Path
    final: Path
    report: dict
    gates: dict
    stages: list[dict]


def compress(model: str, recipe: str | Path | Recipe | None = None, out_dir: str | Path = "runs/compress", *,
             data: str | None = None, threads: int | None = 1, batch_sizes: tuple[int, ...] = (1, 16),
             timing=None, log: Callable[[str], None] = print, progress: Callable | None = None) -> CompressResult:
    from edgemm.bench.latency import TimingSettings
    from edgemm.bench.runner import run_bench

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    profile = load_profile(recipe.target)
    teacher = resolve_model(model)
    if teacher.module is None:
        raise ConfigError(f"{model} is an ONNX file; compress starts from a PyTorch model",
                          "give the trained model (run directory, module:factory with --weights, zoo name)")
    dataset = data or teacher.spec.dataset
    if not dataset:
        raise ConfigError(f"model {teacher.spec.name!r} names no dataset for calibration and gates",
                          "pass --data NAME of a registered dataset")
    if not teacher.trained:
        log("warning: the input model has random weights; accuracy figures will be meaningless")
    out_dir = Path(out_dir)
    for stale in ("final", "manifest.json", "gate_report.json", "gate_report.md"):
        path = out_dir / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    ctx = Context(recipe, profile, teacher, dataset, out_dir, threads, log, progress)
    source = Artifact("torch", out_dir / "00-input")
    save_model(teacher, source.path)  # the run is self-contained; same bytes give the same stage keys
    ctx.reference_accuracy = ctx.accuracy(source)
    log(f"input model: {recipe.gates.split} accuracy {100 * ctx.reference_accuracy:.2f} %")
    reference_onnx, _ = run_stage(1, "export", None, source, ctx)
    artifact, stages, steps = source, [], plan(recipe)
    if steps[0][0] == "export":  # the input's export is the reference export: do not redo it
        artifact, steps = reference_onnx, steps[1:]
    for index, (name, config) in enumerate(steps, start=2):
        artifact, metrics = run_stage(index, name, config, artifact, ctx)
        stages.append({"stage": name, **{k: v for k, v in metrics.items() if k != "history"}})
    log("benchmark: torch fp32 eager vs ORT fp32 vs compressed")
    report = run_bench([str(source.path), str(reference_onnx.path), str(artifact.path)], batch_sizes=batch_sizes,
                       threads=threads, splits=REPORT_SPLITS, rounds=3,
                       timing=timing or TimingSettings(warmup=20, min_iterations=100, min_seconds=2.0))
    gates = check_gates(recipe, ctx.reference_accuracy, ctx.accuracy(artifact), report)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", comparison_markdown(report, gates, stages, recipe))
    if not gates["passed"]:
        write_json(out_dir / "gate_report.json", {"gates": gates, "stages": stages})
        raise GateFailed(f"recipe {recipe.name!r} missed its gates: {'; '.join(gates['failures'])}",
                         f"see {out_dir / 'report.md'}; loosen the recipe's gates or compress less")
    final = out_dir / "final" / "model.onnx"
    with atomic_path(final) as tmp:
        shutil.copyfile(artifact.path, tmp)
    write_manifest(out_dir, kind="compress", inputs={"model": model, "dataset": dataset},
                   config={"recipe": recipe.model_dump(mode="json"), "profile": profile.model_dump(mode="json")},
                   metrics={"gates": gates, "stages": stages}, artifacts=["final/model.onnx", "report.json"])
    return CompressResult(out_dir, final, report, gates, stages)


def check_gates(recipe: Recipe, reference: float, final: float, report: dict) -> dict:
    """Accuracy drop against the input model and batch-1 speed-up against its ORT fp32 export."""
    g = recipe.gates
    allowed = g.allowed_drop(reference)
    torch_b1, ort_b1, final_b1 = (next(e["p50_ms"] for e in r["latency"] if e["batch_size"] == min(
        x["batch_size"] for x in r["latency"])) for r in report["results"])
    speedup = ort_b1 / final_b1
    failures = []
    if reference - final > allowed + 1e-9:
        failures.append(f"{g.split} accuracy dropped {100 * (reference - final):.2f} points "
                        f"(allowed {100 * allowed:.2f})")
    if g.min_speedup and speedup < g.min_speedup:
        failures.append(f"batch-1 speed-up over ORT fp32 is {speedup:.2f}x (required {g.min_speedup}x)")
    return {"passed": not failures, "failures": failures, "split": g.split, "reference_accuracy": reference,
            "final_accuracy": final, "allowed_drop": allowed, "speedup_vs_ort_fp32": speedup,
            "speedup_vs_torch_eager": torch_b1 / final_b1}


def comparison_markdown(report: dict, gates: dict, stages: list[dict], recipe: Recipe) -> str:
    from edgemm.bench.report import to_markdown

    names = ["(a) torch fp32 eager", "(b) ONNX Runtime fp32", f"(c) compressed: {recipe.name}"]
    table = to_markdown(report).replace("## edgemm bench\n\n", "")
    for r, label in zip(report["results"], names):
        table = table.replace(f"| {r['model']} | {r['backend']} |", f"| {label} | {r['backend']} |", 1)
    verdict = "passed" if gates["passed"] else "FAILED: " + "; ".join(gates["failures"])
    stage_lines = "\n".join(f"- `{s['stage']}`: {gates['split']} accuracy {100 * s['accuracy']:.2f} % "
                            f"({s['accuracy_drop_points']:+.2f} pts drop), {s['seconds']} s" for s in stages)
    return (f"## edgemm compress: {recipe.name}\n\n{table}\n"
            f"**Gates ({gates['split']} split): {verdict}.** Accuracy {100 * gates['reference_accuracy']:.2f} % → "
            f"{100 * gates['final_accuracy']:.2f} % (allowed drop {100 * gates['allowed_drop']:.2f} pts); "
            f"batch-1 speed-up {gates['speedup_vs_torch_eager']:.2f}× vs torch eager, "
            f"{gates['speedup_vs_ort_fp32']:.2f}× vs ORT fp32.\n\nStages:\n{stage_lines}\n")
