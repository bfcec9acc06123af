"""Rich tables for the terminal (the Markdown report is the file twin of bench_table)."""
from __future__ import annotations

from rich.table import Table

from edgemm.spec import ModelSpec


def accuracy_table(accuracy: dict[str, dict[str, float]]) -> Table:
    splits = list(next(iter(accuracy.values())))
    table = Table(title="Accuracy (fused model vs single-modality baselines)")
    table.add_column("model")
    for split in splits:
        table.add_column(split, justify="right")
    best = {s: max(acc[s] for name, acc in accuracy.items() if name != "demo-fusion") for s in splits}
    for name, acc in accuracy.items():
        table.add_row(name, *(f"{100 * acc[s]:.1f} %" for s in splits), style="bold" if name == "demo-fusion" else None)
    if "demo-fusion" in accuracy:
        table.add_row("fusion gain over best single", *(f"{100 * (accuracy['demo-fusion'][s] - best[s]):+.1f} pts"
                                                        for s in splits), style="green")
    return table


def bench_table(report: dict) -> Table:
    from edgemm.environment import describe

    settings = report["settings"]
    table = Table(title="Benchmark", caption=f"measured on {describe(report['machine'])}")
    for col in ("model", "backend", "params", "size MB", *(f"acc {s}" for s in settings["splits"])):
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for b in settings["batch_sizes"]:
        for k in ("p50", "p90", "p99"):
            table.add_column(f"b{b} {k} ms", justify="right")
        table.add_column(f"b{b} items/s", justify="right")
    for r in report["results"]:
        lat = {e["batch_size"]: e for e in r["latency"]}
        cells = [r["model"], r["backend"], f"{(r['parameters'] or 0) / 1e6:.2f} M",
                 f"{(r['size_bytes'] or 0) / 1e6:.2f}"]
        cells += [f"{100 * r['accuracy'][s]:.1f} %" if s in r["accuracy"] else "-" for s in settings["splits"]]
        for b in settings["batch_sizes"]:
            cells += [f"{lat[b][k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms")] + [f"{lat[b]['throughput_per_s']:.0f}"]
        table.add_row(*cells)
    return table


def spec_table(spec: ModelSpec) -> Table:
    table = Table(title=f"{spec.name}  (task: {spec.task.kind}, metric: {spec.task.metric}, dataset: {spec.dataset})")
    for col in ("input", "modality", "dtype", "shape", "range / vocab", "description"):
        table.add_column(col)
    for i in spec.inputs:
        rng = f"vocab {i.vocab_size}" if i.vocab_size else (f"{i.value_range}" if i.value_range else "-")
        table.add_row(i.name, i.modality, i.dtype, str(list(i.shape)), rng, i.description)
    for name, axis in spec.axes.items():
        table.add_row(f"axis {name}", "", "", f"min {axis.min} / opt {axis.opt} / max {axis.max}", "", "")
    for o in spec.outputs:
        table.add_row(f"→ {o.name}", "output", "", str(list(o.shape)), "", o.description)
    return table
