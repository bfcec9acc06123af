"""The ``edgemm`` command: a thin layer over the Python API (``edgemm.api``)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgemm.cli.common import console, handles_errors, out, status, step_progress

app = typer.Typer(help="Compress, export and benchmark multimodal models for edge targets.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ModelArg = Annotated[str, typer.Argument(help="zoo name, package.module:factory, run directory or .onnx file")]
WeightsOpt = Annotated[Optional[Path], typer.Option(help="weights: .safetensors or a tensors-only torch checkpoint")]
ThreadsOpt = Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch and ONNX Runtime (default: all cores)")]


class Target(str, Enum):
    onnx = "onnx"
    tensorrt = "tensorrt"
    torch_tensorrt = "torch-tensorrt"


@app.command()
@handles_errors
def demo(out_dir: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/demo"),
         epochs: Annotated[int, typer.Option(min=1)] = 8, threads: ThreadsOpt = None) -> None:
    """Train the demo model and its unimodal baselines, export to ONNX, benchmark torch vs ONNX Runtime."""
    from edgemm.cli.tables import accuracy_table, bench_table
    from edgemm.demo import run_demo

    with step_progress() as progress:
        result = run_demo(out_dir, epochs=epochs, threads=threads, progress=progress,
                          log=lambda msg: console.print(f"[cyan]›[/] {msg}", highlight=False))
    out.print(accuracy_table(result.accuracy))
    out.print(bench_table(result.bench))
    out.print(f"run directory: {result.out_dir}  (bench report: {result.out_dir / 'bench' / 'report.md'})")


@app.command()
@handles_errors
def compress(model: Annotated[Optional[str], typer.Argument(help="trained model; default: the demo's, trained if needed")] = None,
             recipe: Annotated[Optional[str], typer.Option(help="recipe name or YAML path")] = None,
             data: Annotated[Optional[str], typer.Option(help="dataset name (default: the model's)")] = None,
             out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/compress"),
             threads: Annotated[int, typer.Option(min=1, help="threads for latency figures")] = 1) -> None:
    """Run a recipe of stages (prune, distill, quantize) under accuracy gates; with no arguments, on the demo."""
    from edgemm.cli.tables import bench_table
    from edgemm.compress.pipeline import compress as run_compress

    log = lambda msg: console.print(f"[cyan]›[/] {msg}", highlight=False)  # noqa: E731
    with step_progress() as progress:
        if model is None:
            from edgemm.demo import run_demo
            log("no model given: training the built-in demo model first (runs/demo)")
            run_demo("runs/demo", progress=progress, log=log, bench=False)
            model = "runs/demo"
        result = run_compress(model, recipe, out_dir, data=data, threads=threads, log=log, progress=progress)
    out.print(bench_table(result.report))
    g = result.gates
    out.print(f"[green]gates passed[/]: {g['split']} accuracy {100 * g['reference_accuracy']:.2f} % → "
              f"{100 * g['final_accuracy']:.2f} %, batch-1 {g['speedup_vs_torch_eager']:.2f}× vs torch eager, "
              f"{g['speedup_vs_ort_fp32']:.2f}× vs ORT fp32")
    out.print(f"wrote {result.final} and {result.out_dir / 'report.md'}")


@app.command()
@handles_errors
def export(model: ModelArg,
           target: Annotated[Target, typer.Option(help="what to build")] = Target.onnx,
           profile: Annotated[str, typer.Option(help="name in export_profiles/ or a YAML path")] = "x86-cpu",
           out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/export"),
           weights: WeightsOpt = None) -> None:
    """Export to ONNX (dynamic axes, onnxslim) and validate against PyTorch on held-out samples."""
    from edgemm.api import export as api_export

    with status(f"exporting {model} to {target.value}"):
        result = api_export(model, target=target.value, profile=profile, out_dir=out_dir, weights=weights)
    for check in result.validation.checks:
        agree = "" if check.top1_agreement is None else f", top-1 agreement {check.top1_agreement:.4f}"
        out.print(f"[green]✓[/] {check.output}: max abs error {check.max_abs_error:.2e}, "
                  f"cosine {check.cosine:.6f}{agree}")
    out.print(f"wrote {result.onnx_path} ({result.nodes_exported} → {result.nodes_simplified} nodes, "
              f"{result.seconds:.1f} s)")


@app.command()
@handles_errors
def validate(candidate: Annotated[Path, typer.Argument(help="an .onnx file")],
             reference: Annotated[str, typer.Option(help="the PyTorch model it should match")],
             profile: Annotated[str, typer.Option()] = "x86-cpu", weights: WeightsOpt = None) -> None:
    """Compare an ONNX artifact with its PyTorch reference; exit 3 when it disagrees."""
    from edgemm.api import validate as api_validate
    from edgemm.errors import ValidationFailed

    report = api_validate(candidate, reference, profile=profile, weights=weights)
    if not report.passed:
        raise ValidationFailed(f"{candidate} disagrees with {reference}: {report.failure_text()}",
                               "re-export it from the reference model")
    out.print(f"[green]✓[/] {candidate} matches {reference} on {len(report.inputs)} input batches")


@app.command()
@handles_errors
def bench(artifacts: Annotated[list[str], typer.Argument(help="models or .onnx files")],
          backend: Annotated[Optional[list[str]], typer.Option(help="torch, ort-cpu, ort-cuda (repeat)")] = None,
          batch_size: Annotated[list[int], typer.Option(min=1)] = [1, 16],  # noqa: B006
          threads: ThreadsOpt = None,
          split: Annotated[list[str], typer.Option(help="eval split(s) for accuracy")] = ["test"],  # noqa: B006
          warmup: Annotated[int, typer.Option(min=0)] = 10,
          min_iterations: Annotated[int, typer.Option(min=1)] = 50,
          min_seconds: Annotated[float, typer.Option(min=0)] = 1.0,
          rounds: Annotated[int, typer.Option(min=1, help="alternating rounds over the artifacts")] = 2,
          breakdown: Annotated[bool, typer.Option(help="time preprocessing, each tower and fusion (torch)")] = False,
          baseline: Annotated[Optional[Path], typer.Option(help="report.json to compare with (CI gate)")] = None,
          fail_on: Annotated[str, typer.Option(help="thresholds vs --baseline, e.g. 'p50=10%,accuracy=1'")] = "p50=10%,p90=15%,accuracy=1",
          out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/bench")) -> None:
    """Latency (p50/p90/p99 with CIs), accuracy, fidelity, size, FLOPs; JSON + Markdown + plots; CI gate."""
    from edgemm.api import bench as api_bench
    from edgemm.bench.latency import TimingSettings
    from edgemm.bench.regression import RegressionFound, load_report, parse_fail_on, regressions
    from edgemm.cli.tables import bench_table

    limits = parse_fail_on(fail_on) if baseline else {}
    old = load_report(baseline) if baseline else None
    with status("benchmarking") as say:
        report, paths = api_bench(artifacts, backends=backend, batch_sizes=tuple(batch_size), threads=threads,
                                  splits=tuple(split), timing=TimingSettings(warmup, min_iterations, min_seconds),
                                  rounds=rounds, breakdown=breakdown, out_dir=out_dir, progress=say)
    out.print(bench_table(report))
    for warning in report["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    out.print(f"wrote {paths[0]}, {paths[1]} and plots in {out_dir}")
    if old is not None:
        found = regressions(old, report, limits)
        if found:
            raise RegressionFound(f"{len(found)} regression(s) against {baseline}: " + "; ".join(found),
                                  "investigate, or refresh the baseline if the change is intended")
        out.print(f"[green]no regression[/] against {baseline} ({fail_on})")


@app.command()
@handles_errors
def report(reports: Annotated[list[Path], typer.Argument(help="run directories or report.json files")],
           out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/report")) -> None:
    """Re-render Markdown and plots from bench reports; with several, compare each with the first."""
    from edgemm.artifacts import write_text
    from edgemm.bench.regression import load_report, regressions
    from edgemm.bench.report import plot, to_markdown

    loaded = [load_report(p) for p in reports]
    parts = [to_markdown(r).replace("## edgemm bench", f"## {p}") for p, r in zip(reports, loaded)]
    for path, rep in zip(reports[1:], loaded[1:]):
        diff = regressions(loaded[0], rep, {"p50_ms": 0.0, "p90_ms": 0.0, "accuracy": 0.0})
        parts.append(f"### {path} vs {reports[0]}\n\n" + ("\n".join(f"- slower/worse: {d}" for d in diff) or "- no change for the worse"))
    write_text(out_dir / "report.md", "\n\n".join(parts) + "\n")
    pngs = plot(loaded, out_dir)
    out.print(f"wrote {out_dir / 'report.md'} and {', '.join(str(p) for p in pngs)}")


@app.command()
@handles_errors
def predict(model: ModelArg,
            inputs: Annotated[Path, typer.Option(help=".npz with one array per model input")],
            weights: WeightsOpt = None,
            backend: Annotated[Optional[str], typer.Option()] = None) -> None:
    """Run a model on inputs from an .npz file (checked against the model contract)."""
    from edgemm.api import predict as api_predict

    outputs = api_predict(model, inputs, weights=weights, backend=backend)
    for name, value in outputs.items():
        top = f", top-1 {value.argmax(axis=-1).tolist()}" if value.ndim == 2 else ""
        out.print(f"{name}: shape {list(value.shape)}{top}")


@app.command()
@handles_errors
def info(model: ModelArg) -> None:
    """Show a model's contract: inputs per modality, dynamic axes, outputs, task."""
    from edgemm.cli.tables import spec_table
    from edgemm.models.registry import resolve_model

    out.print(spec_table(resolve_model(model).spec))


@app.command()
def zoo() -> None:
    """List built-in models."""
    from edgemm.models.registry import ZOO

    for name, entry in ZOO.items():
        out.print(f"[bold]{name}[/]  {entry.description}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
