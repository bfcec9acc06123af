"""The ``edgemm`` command: a thin layer over the Python API (``edgemm.api``).

Choices (backends, export targets) and option groups (timing) are read from the registries and
settings models, so ``edgemm --help`` always lists what is installed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import TyperException

from edgemm.bench.latency import TimingSettings
from edgemm.cli import deploy
from edgemm.cli.common import handles_errors, out, say, set_debug, status, step_progress
from edgemm.cli.options import ThreadsOpt, choices, option_group
from edgemm.bench.regression import parse_fail_on
from edgemm.bench.schema import BenchReport
from edgemm.compress.recipe import available_recipes
from edgemm.errors import ConfigError, ValidationFailed
from edgemm.export.profiles import DEFAULT_PROFILE, available_profiles
from edgemm.export.target import EXPORT_TARGETS
from edgemm.lazy import lazy_import
from edgemm.models.registry import ZOO, read_contract
from edgemm.runtime import BACKENDS
from edgemm.runtime.memory_guard import parse_size
from edgemm.trust import trust_everything

api = lazy_import("edgemm.api")  # the heavy half: loaded when a command runs, not for --help
demos = lazy_import("edgemm.demo")
tables = lazy_import("edgemm.cli.tables")

app = typer.Typer(help="Compress, export and benchmark multimodal models for edge targets.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

Backend = choices("Backend", BACKENDS.names())
Target = choices("Target", EXPORT_TARGETS.names())
ModelArg = Annotated[str, typer.Argument(help="zoo name, package.module:factory, run directory or .onnx file")]
WeightsOpt = Annotated[Optional[Path], typer.Option(help="weights: .safetensors or a tensors-only torch checkpoint")]
DataOpt = Annotated[Optional[str], typer.Option(
    help="data folder (metadata.csv + files), .npz, module:function or registered name (default: the model's)")]
ProfileOpt = Annotated[str, typer.Option(help="name in export_profiles/ (`edgemm profiles list`) or a YAML path")]


@app.callback()
def settings(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of unexpected errors "
                                                                 "(also EDGEMM_DEBUG=1)")] = False,
             trust_code: Annotated[bool, typer.Option("--trust-code", help="run factories and data functions named "
                                                                           "in loaded files (run directories, ONNX "
                                                                           "contracts); also EDGEMM_TRUST_CODE=1")] = False,
             ) -> None:
    """Options for every command: edgemm [--debug] [--trust-code] COMMAND ..."""
    set_debug(debug)
    trust_everything(trust_code)


def log(msg: str) -> None:
    say("›", "cyan", msg)


DEMO_RUN = "runs/demo"


def demo_model(progress=None) -> str:
    """The trained demo model (runs/demo), trained first if it is not there yet."""
    log(f"the built-in demo model: trained in {DEMO_RUN} if needed")
    demos.run_demo(DEMO_RUN, progress=progress, log=log, bench=False)
    return DEMO_RUN


@app.command()
@handles_errors
def demo(out_dir: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/demo"),
         epochs: Annotated[int, typer.Option(min=1)] = 8, threads: ThreadsOpt = None) -> None:
    """Train the demo model and its unimodal baselines, export to ONNX, benchmark torch vs ONNX Runtime."""
    with step_progress() as progress:
        result = demos.run_demo(out_dir, epochs=epochs, threads=threads, progress=progress, log=log)
    out.print(tables.accuracy_table(result.accuracy, fused=demos.FUSED))
    out.print(tables.bench_table(result.bench))
    say("run directory:", "", f"{result.out_dir}  (bench report: {result.out_dir / 'bench' / 'report.md'})", out)


@app.command()
@handles_errors
@option_group(TimingSettings, "timing", defaults=TimingSettings.for_compress())
def compress(model: Annotated[Optional[str], typer.Argument(help="trained model; default: the demo's, trained if needed")] = None,
             recipe: Annotated[Optional[str], typer.Option(help=f"recipe name ({', '.join(available_recipes())}) or YAML path")] = None,
             profile: Annotated[Optional[str], typer.Option(help="export profile to compress for (int8 scheme, "
                                                            "round_to, validation); default: the recipe's target")] = None,
             data: DataOpt = None, weights: WeightsOpt = None,
             out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/compress"),
             threads: Annotated[int, typer.Option(min=1, help="threads for latency figures")] = 1,
             batch_size: Annotated[list[int], typer.Option(min=1, help="batch sizes of the final comparison; "
                                                           "the gates read the smallest")] = [1, 16],  # noqa: B006
             max_memory: Annotated[Optional[str], typer.Option(help="stop, with the step named, when the run's resident "
                                                               "memory passes this (e.g. 6GB)")] = None,
             timing: TimingSettings = TimingSettings.for_compress()) -> None:
    """Run a recipe of stages (prune, distill, quantize) under accuracy gates; with no arguments, on the demo."""
    limit = parse_size(max_memory) if max_memory else None  # a bad size fails before the demo trains
    with step_progress() as progress:
        if model is None:
            model = demo_model(progress)
        result = api.compress(model, recipe, out_dir, data=data, weights=weights, threads=threads, profile=profile,
                              batch_sizes=tuple(batch_size), timing=timing, log=log,
                              progress=progress, max_memory=limit)
    out.print(tables.bench_table(result.report, result.labels))
    g = result.gates
    low, high = g["paired"]["drop_ci95_points"]
    say("gates passed:", "green", f"{g['split']} accuracy {100 * g['reference_accuracy']:.2f} % → "
        f"{100 * g['final_accuracy']:.2f} % (drop 95 % interval [{low:.2f}, {high:.2f}] pts), "
        f"batch-{g['batch_size']} {g['speedup_vs_torch_eager']:.2f}× vs "
        f"torch eager, {g['speedup_vs_ort_fp32']:.2f}× vs ORT fp32", out)
    for warning in g.get("warnings", []):
        say("warning:", "yellow", warning, out)
    say("wrote", "", f"{result.final} and {result.out_dir / 'report.md'}", out)


@app.command()
@handles_errors
def export(model: ModelArg,
           target: Annotated[Target, typer.Option(help="what to build (`edgemm list targets`)")] = Target("onnx"),
           profile: Annotated[Optional[str], typer.Option(help="name in export_profiles/ (`edgemm profiles list`) or "
                                                          "a YAML path; default: the target's generic profile")] = None,
           out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/export"),
           weights: WeightsOpt = None, data: DataOpt = None) -> None:
    """Export: ONNX validated against PyTorch; TensorRT engines, or a bundle that builds them on the device."""
    if model == "demo" and not Path(model).exists():
        with step_progress() as progress:
            model = demo_model(progress)
    with status(f"exporting {model} to {target.value}"):
        result = api.export(model, target=target.value, profile=profile, out_dir=out_dir, weights=weights, data=data)
    for check in result.validation.checks if result.validation else []:
        agree = "" if check.top1_agreement is None else f", top-1 agreement {check.top1_agreement:.4f}"
        say("✓", "green", f"{check.output}: max abs error {check.max_abs_error:.2e}, cosine {check.cosine:.6f}{agree}",
            out)
    if result.validation:  # say what it was checked on: real samples, or only generated inputs
        fed = result.validation.inputs
        real = [f for f in fed if not f.startswith("random")]
        say(f"validated on {len(fed)} batch(es):", "", ", ".join(fed), out)
        if not real:
            say("note:", "yellow", "no data: generated inputs only; pass --data for real samples", out)
    for note in result.details.get("notes", []):
        say("note:", "yellow", note, out)
    if result.details.get("bundle"):
        say("TensorRT bundle:", "cyan", f"{', '.join(result.details['candidates'])} graph(s) checked for TensorRT "
            f"{result.details['tensorrt_major']}.x; copy {result.path} to the device and run "
            "`python3 build_on_device.py` there (README.md inside)", out)
    nodes = result.details
    shape = f"{nodes['nodes_exported']} → {nodes['nodes_simplified']} nodes, " if "nodes_exported" in nodes else ""
    say("wrote", "", f"{result.path} ({shape}{result.seconds:.1f} s)", out)


@app.command()
@handles_errors
def validate(candidate: Annotated[Path, typer.Argument(help="an .onnx file")],
             reference: Annotated[str, typer.Option(help="the PyTorch model it should match")],
             profile: ProfileOpt = DEFAULT_PROFILE, weights: WeightsOpt = None, data: DataOpt = None) -> None:
    """Compare an ONNX artifact with its PyTorch reference; exit 3 when it disagrees."""
    report = api.validate(candidate, reference, profile=profile, weights=weights, data=data)
    if not report.passed:
        raise ValidationFailed(f"{candidate} disagrees with {reference}: {report.failure_text()}",
                               "re-export it from the reference model")
    say("✓", "green", f"{candidate} matches {reference} on {len(report.inputs)} input batches", out)


@app.command()
@handles_errors
@option_group(TimingSettings, "timing")
def bench(artifacts: Annotated[list[str], typer.Argument(help="models or .onnx files")],
          backend: Annotated[Optional[list[Backend]], typer.Option(help="repeat for several (default: torch for "
                                                                        "PyTorch models, ort-cpu for ONNX)")] = None,
          batch_size: Annotated[list[int], typer.Option(min=1)] = [1, 16],  # noqa: B006
          threads: ThreadsOpt = None,
          split: Annotated[list[str], typer.Option(help="eval split(s) for accuracy")] = ["test"],  # noqa: B006
          label: Annotated[Optional[list[str]], typer.Option(help="display name per artifact, in order")] = None,
          data: DataOpt = None,
          breakdown: Annotated[bool, typer.Option(help="time preprocessing, each tower and fusion (torch)")] = False,
          profile: Annotated[bool, typer.Option(help="ONNX Runtime's profiler: kernel time by op type and by tower, "
                                                     "stand-alone Q/DQ nodes (ONNX files)")] = False,
          baseline: Annotated[Optional[Path], typer.Option(help="report.json to compare with (CI gate)")] = None,
          fail_on: Annotated[str, typer.Option(help="thresholds vs --baseline, e.g. 'p50=10%,accuracy=1'")] = "p50=10%,p90=15%,accuracy=1",
          out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/bench"),
          timing: TimingSettings = TimingSettings()) -> None:
    """Latency (p50/p90/p99 with CIs), accuracy, fidelity, size, FLOPs; JSON + Markdown + plots; CI gate."""
    if baseline:  # a bad baseline or threshold fails before minutes of benchmarking, not after
        BenchReport.load(baseline)
        parse_fail_on(fail_on)
    with status("benchmarking") as update:
        report, paths = api.bench(artifacts, backends=[b.value for b in backend] if backend else None,
                                  batch_sizes=tuple(batch_size), threads=threads, splits=tuple(split), timing=timing,
                                  breakdown=breakdown, profile=profile, labels=label, dataset=data, out_dir=out_dir, progress=update)
    out.print(tables.bench_table(report))
    for warning in report.warnings:
        say("warning:", "bold yellow", warning)
    say("wrote", "", f"{paths[0]}, {paths[1]} and plots in {out_dir}", out)
    if baseline:
        comparison = api.check_regressions(baseline, report, fail_on, out_dir)
        for note in comparison.notes():
            say("note:", "yellow", note)
        say("no regression", "green", f"against {baseline} ({fail_on}; {len(comparison.pairs)} result(s) compared)", out)


@app.command()
@handles_errors
def report(reports: Annotated[list[Path], typer.Argument(help="run directories or report.json files")],
           out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/report")) -> None:
    """Re-render Markdown and plots from bench reports; with several, compare each with the first."""
    markdown, pngs = api.report(reports, out_dir)
    say("wrote", "", f"{markdown} and {', '.join(str(p) for p in pngs)}", out)


@app.command()
@handles_errors
def predict(model: ModelArg,
            inputs: Annotated[Optional[Path], typer.Option(help=".npz with one array per model input")] = None,
            data: DataOpt = None,
            split: Annotated[Optional[str], typer.Option(help="with --data: the split to read [default: test]")] = None,
            rows: Annotated[Optional[str], typer.Option(help="with --data: rows START:STOP (or one row N) of the "
                                                             "split [default: 0:4]")] = None,
            weights: WeightsOpt = None,
            backend: Annotated[Optional[Backend], typer.Option()] = None, threads: ThreadsOpt = None) -> None:
    """Run a model on inputs from an .npz file, or on rows of a dataset read as its contract says."""
    if (inputs is None) == (data is None):
        raise ConfigError("give --inputs FILE.npz or --data REF (with --split and --rows)", "one of the two")
    if inputs is not None and (split is not None or rows is not None):
        raise ConfigError("--split and --rows choose rows of --data; with --inputs every row of the file is run",
                          "drop --split/--rows, or use --data")
    feed = inputs if inputs is not None else api.data_rows(model, data, split or "test", rows or "0:4",
                                                           weights=weights)
    outputs = api.predict(model, feed, weights=weights, backend=backend.value if backend else None, threads=threads)
    for name, value in outputs.items():
        top = f", top-1 {value.argmax(axis=-1).tolist()}" if value.ndim == 2 else ""
        say(f"{name}:", "", f"shape {list(value.shape)}{top}", out)


@app.command()
@handles_errors
def info(model: ModelArg) -> None:
    """Show a model's contract: inputs per modality, dynamic axes, outputs, task."""
    out.print(tables.spec_table(read_contract(model)))  # a run directory's contract is read, nothing runs


@app.command()
@handles_errors
def zoo() -> None:
    """List built-in models."""
    for entry in ZOO:
        say(entry.name, "bold", f" {entry.description}", out)


@app.command("list")
@handles_errors
def list_components(kind: Annotated[Optional[str], typer.Argument(
                        help="one kind of component (default: every kind); an unknown kind lists the kinds")] = None,
                    schema: Annotated[Optional[str], typer.Option(
                        help="print a JSON Schema instead: recipe, profile or report")] = None) -> None:
    """What is registered (stages, quantizers, export targets, backends, models, datasets) and usable here."""
    if schema and kind:
        raise ConfigError(f"--schema prints one JSON Schema; it does not combine with {kind!r}",
                          f"run `edgemm list {kind}` and `edgemm list --schema {schema}` separately")
    if schema:
        out.print_json(json.dumps(api.schema(schema)))
        return
    for name, entries in api.components(kind).items():
        out.print(tables.components_table(name, entries))


app.command()(deploy.inspect)  # after export in --help
app.add_typer(deploy.profiles_app, name="profiles")


def main() -> None:
    """``edgemm``: usage mistakes (an unknown option, a bad value) are printed like every other error."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="edgemm", standalone_mode=False)
    except TyperException as err:  # click's usage errors (typer vendors click)
        if type(err).__name__ == "NoArgsIsHelpError":  # `edgemm` alone: the help, as click would show it
            err.show()
            sys.exit(0)
        say("error:", "bold red", err.format_message())
        ctx = getattr(err, "ctx", None)
        say("fix:", "bold", f"see `{ctx.command_path if ctx else 'edgemm'} --help`")
        code = err.exit_code
    except typer.Abort:  # Ctrl-C while click itself was parsing
        say("error:", "bold red", "interrupted (Ctrl-C)")
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
