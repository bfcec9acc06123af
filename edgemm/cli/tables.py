"""Rich tables for the terminal (the Markdown report is the file twin of bench_table)."""
from __future__ import annotations

from typing import Any, Mapping

from rich.markup import escape
from rich.table import Table

from edgemm.bench.report import display_name
from edgemm.bench.schema import BenchReport
from edgemm.environment import describe
from edgemm.spec import ModelSpec


def accuracy_table(accuracy: dict[str, dict[str, float]], fused: str) -> Table:
    """Accuracy per split of a fused model and its single-modality baselines, with the fusion gain."""
    splits = list(next(iter(accuracy.values())))
    table = Table(title="Accuracy (fused model vs single-modality baselines)")
    table.add_column("model")
    for split in splits:
        table.add_column(split, justify="right")
    for name, acc in accuracy.items():
        table.add_row(escape(name), *(f"{100 * acc[s]:.1f} %" for s in splits), style="bold" if name == fused else None)
    baselines = [acc for name, acc in accuracy.items() if name != fused]
    if fused in accuracy and baselines:
        best = {s: max(acc[s] for acc in baselines) for s in splits}
        table.add_row("fusion gain over best single", *(f"{100 * (accuracy[fused][s] - best[s]):+.1f} pts"
                                                        for s in splits), style="green")
    return table


def bench_table(report: BenchReport, labels: Mapping[str, str] | None = None) -> Table:
    """The terminal's view (p99 and the confidence intervals are in report.md); names are never cut."""
    settings = report.settings
    table = Table(title="Benchmark", caption=escape(f"measured on {describe(report.machine.model_dump())}"))
    table.add_column("model", overflow="fold", min_width=22)
    table.add_column("backend", no_wrap=True)
    for col in ("params", "size MB", *(f"acc {s}" for s in settings.splits)):
        table.add_column(col, justify="right")
    for b in settings.batch_sizes:
        for k in ("p50", "p90"):
            table.add_column(f"b{b} {k} ms", justify="right")
        table.add_column(f"b{b} items/s", justify="right")
    for r in report.results:
        cells = [escape(display_name(r, labels)), escape(r.backend), f"{(r.parameters or 0) / 1e6:.2f} M",
                 f"{(r.size_bytes or 0) / 1e6:.2f}"]
        cells += [f"{100 * r.accuracy[s]:.1f} %" if s in r.accuracy else "-" for s in settings.splits]
        for b in settings.batch_sizes:
            lat = r.at(b)
            cells += ([f"{lat.p50_ms:.3f}", f"{lat.p90_ms:.3f}", f"{lat.throughput_per_s:.0f}"] if lat else ["-"] * 3)
        table.add_row(*cells)
    return table


def spec_table(spec: ModelSpec) -> Table:
    trained = "trained weights" if spec.trained else "weights: as built"
    table = Table(title=escape(f"{spec.name}  (task: {spec.task.kind}, metric: {spec.task.metric}, "
                               f"data: {spec.dataset}, {trained})"))
    for col in ("input", "modality", "tower", "dtype", "shape", "range / vocab", "read from data as", "description"):
        table.add_column(col)
    for i in spec.inputs:
        rng = f"vocab {i.vocab_size}" if i.vocab_size else (f"{i.value_range}" if i.value_range else "-")
        table.add_row(*(escape(c) for c in (i.name, i.modality, i.tower_name, i.dtype, str(list(i.shape)), rng,
                                            _preprocess_text(i.preprocess), i.description)))
    for name, axis in spec.axes.items():
        table.add_row(f"axis {escape(name)}", "", "", "", f"min {axis.min} / opt {axis.opt} / max {axis.max}", "", "", "")
    for o in spec.outputs:
        table.add_row(escape(f"→ {o.name}"), "output", "", "", escape(str(list(o.shape))), "", "", escape(o.description))
    return table


def _preprocess_text(how: Any) -> str:
    if how is None:
        return "-"
    details = how.model_dump(exclude={"kind", "column"}, exclude_defaults=True)
    return f"{how.kind}({how.column!r}" + "".join(f", {k}={v}" for k, v in details.items()) + ")"


def components_table(kind: str, entries: list[dict[str, Any]]) -> Table:
    """``edgemm list``: one registry, with what each entry declares and whether it is usable here."""
    columns = [c for c in ("name", "description", "consumes", "produces", "supports", "config")
               if any(e.get(c) for e in entries)]
    table = Table(title=kind)
    for col in columns + ["usable here"]:
        table.add_column(col)
    for e in entries:
        usable = "yes" if not e.get("unavailable") else f"no: {e['unavailable']}"
        cells = [", ".join(e[c]) if isinstance(e.get(c), list) else str(e.get(c) or "") for c in columns]
        table.add_row(*(escape(c) for c in [*cells, usable]))
    return table


def profiles_table(profiles: list[Any]) -> Table:
    table = Table(title="Export profiles")
    for col in ("name", "target", "precision", "device", "TensorRT", "power mode", "batch (min/opt/max)"):
        table.add_column(col)
    for p in profiles:
        trt = getattr(p, "tensorrt", None) if p.target in ("tensorrt", "torch-tensorrt") else None
        mode = p.device.power_mode if p.device else None
        batch = trt.shapes.get("batch") if trt else None
        table.add_row(escape(p.name), p.target, p.precision, escape(p.device.name) if p.device else "-",
                      f"{trt.major}.x" + (f", DLA {trt.dla.core}" if trt.dla.core is not None else "") if trt else "-",
                      escape(mode.name) if mode else "-", f"{batch.min}/{batch.opt}/{batch.max}" if batch else "contract")
    return table


def findings_table(report: Any) -> Table:
    style = {"error": "bold red", "warning": "yellow", "info": ""}
    table = Table(title=f"TensorRT {report.tensorrt_major}.x compatibility: {escape(report.model)}")
    for col in ("", "where", "reason", "fix"):
        table.add_column(col)
    for f in report.findings:
        table.add_row(f.severity, escape(f.where), escape(f.reason), escape(f.fix), style=style[f.severity])
    return table
