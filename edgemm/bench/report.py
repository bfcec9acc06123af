"""Rendering bench reports: Markdown (CI comments), PNG plots, and the files of a report folder.

One renderer for every caller: ``labels`` (result id -> display name) and ``title`` are
arguments, so `edgemm compress`, the benchmark scripts and `edgemm report` never edit the
Markdown after the fact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from edgemm.artifacts import atomic_path, write_text
from edgemm.bench.breakdown import breakdown_markdown
from edgemm.bench.profile import profile_markdown
from edgemm.bench.schema import BenchReport, Result, json_schema
from edgemm.environment import describe
from edgemm.lazy import lazy_import

jsonschema = lazy_import("jsonschema")
matplotlib = lazy_import("matplotlib")
pyplot = lazy_import("matplotlib.pyplot")  # imported after matplotlib.use("Agg"): no display needed
Labels = Mapping[str, str]  # result id -> the name a table shows


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])


def display_name(result: Result, labels: Labels | None) -> str:
    return (labels or {}).get(result.id, result.name)


def main_table(report: BenchReport, labels: Labels | None = None) -> str:
    splits, batches = report.settings.splits, report.settings.batch_sizes
    head = (["model", "backend", "params", "size"] + [f"acc {s}" for s in splits]
            + [f"b{b} {k}" for b in batches for k in ("p50 ms", "p90 ms", "p99 ms")] + [f"b{batches[-1]} items/s"])
    rows = []
    for r in report.results:
        acc = [f"{100 * r.accuracy[s]:.1f} %" if s in r.accuracy else "-" for s in splits]
        times = []
        for b in batches:
            lat = r.at(b)
            times += ([f"{lat.p50_ms:.3f}{'*' if lat.noisy else ''}", f"{lat.p90_ms:.3f}", f"{lat.p99_ms:.3f}"]
                      if lat else ["-"] * 3)
        last = r.at(batches[-1])
        rows.append([display_name(r, labels), r.backend, _count(r.parameters), _size(r.size_bytes)] + acc + times
                    + [f"{last.throughput_per_s:.0f}" if last else "-"])
    return _table(head, rows)


def detail_table(report: BenchReport, labels: Labels | None = None) -> str:
    on_device = any(lat.device_samples_ms for r in report.results for lat in r.latency)  # GPU sessions ran
    rows = []
    for r in report.results:
        ci = ", ".join(f"b{lat.batch_size} [{lat.p50_ci95_ms[0]:.3f}, {lat.p50_ci95_ms[1]:.3f}]" for lat in r.latency)
        fid = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in r.fidelity.items() if "top1" in k)
        eff = f"{100 * r.efficiency:.1f} % of {r.peak_precision}" if r.efficiency is not None else "-"
        flops = f"{r.flops_per_item / 1e6:.1f} M" if r.flops_per_item else "-"
        device = ", ".join(f"b{lat.batch_size} {lat.device_p50_ms:.3f}" for lat in r.latency if lat.device_p50_ms)
        rows.append([display_name(r, labels), r.backend, r.precision, ci, flops, eff, fid or "-"]
                    + ([device or "-"] if on_device else []))
    head = ["model", "backend", "precision", "p50 95 % CI (ms)", "FLOPs/item", "efficiency vs GEMM peak of its precision",
            "fidelity vs first"]
    if on_device:
        head.append("device p50 ms")
    return _table(head, rows)


def notes(report: BenchReport, labels: Labels | None = None) -> list[str]:
    machine, timing = report.machine, report.settings.timing
    peaks = ", ".join(f"{p} {v} G{'FLOP' if p != 'int8' else 'OP'}/s" for p, v in machine.peak_gops.items()) or "-"
    lines = [f"Measured {report.created} on {describe(machine.model_dump())}; GEMM peaks ({machine.threads} thread(s)): "
             f"{peaks}; bench process peak RSS {machine.peak_rss_mb if machine.peak_rss_mb is not None else '-'} MB.",
             f"Latency: {timing.rounds} alternating rounds per batch size, ≥{timing.min_iterations} timed calls after "
             f"{timing.warmup} warm-up calls; raw samples are in the JSON report. "
             "`*` marks a p50 whose 95 % confidence interval is wider than ±5 % (noisy)."]
    feeds = sorted({f"batch {lat.batch_size}: {lat.inputs} ({', '.join(f'{k} {v}' for k, v in lat.sizes.items())})"
                    for r in report.results for lat in r.latency if lat.inputs})
    if feeds:
        lines.append("Timed inputs: " + "; ".join(feeds) + ".")
    untrained = [display_name(r, labels) for r in report.results if not r.trained]
    if untrained:
        lines.append(f"Untrained (random) weights: {', '.join(untrained)} — accuracy is meaningless there.")
    return lines


def to_markdown(report: BenchReport, labels: Labels | None = None, title: str = "edgemm bench") -> str:
    warnings = "".join(f"\n> ⚠️ {w}" for w in report.warnings)
    breakdowns = "".join(f"\n### Where the time goes: {display_name(r, labels)} ({r.backend})\n\n"
                         f"{breakdown_markdown(r.breakdown)}" for r in report.results if r.breakdown)
    breakdowns += "".join(f"\n### Where the time goes in the graph: {display_name(r, labels)} ({r.backend})\n\n"
                          f"{profile_markdown(r.profile)}" for r in report.results if r.profile)
    return (f"## {title}\n\n{main_table(report, labels)}\n\n{detail_table(report, labels)}\n\n"
            + "\n".join(f"- {n}" for n in notes(report, labels)) + "\n" + (warnings + "\n" if warnings else "")
            + breakdowns)


def validate_report(data: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when a report.json does not follow the generated schema."""
    jsonschema.validate(data, json_schema())


def plot(reports: list[BenchReport], out_dir: Path, labels: Labels | None = None) -> list[Path]:
    """Accuracy-vs-latency Pareto chart of all variants, and latency distributions."""
    matplotlib.use("Agg")
    plt = pyplot
    results = [r for rep in reports for r in rep.results]
    split = next(iter(reports[0].settings.splits), None)
    batch = min(reports[0].settings.batch_sizes)
    points = [(r.at(batch).p50_ms, 100 * r.accuracy[split], f"{display_name(r, labels)} [{r.backend}]")
              for r in results if split in r.accuracy and r.at(batch)]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if points:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        front, best = [], -1.0
        for x, y, _ in sorted(points):
            if y > best:
                front.append((x, y))
                best = y
        ax.plot(*zip(*front), "--", color="grey", label="Pareto front")
        for x, y, label in points:
            ax.scatter(x, y, s=40)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(f"p50 latency at batch {batch} (ms)")
        ax.set_ylabel(f"accuracy on {split} (%)")
        ax.set_title("Accuracy vs latency")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "pareto.png"))
    batches = reports[0].settings.batch_sizes
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
        shown = [r for r in results if r.at(b)]
        ax.boxplot([r.at(b).samples_ms for r in shown], showfliers=True)
        ax.set_xticks(range(1, len(shown) + 1), [f"{display_name(r, labels)}\n{r.backend}" for r in shown], fontsize=7)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"batch {b}: latency distribution")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency.png"))
    plt.close("all")
    return written


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def write_report(report: BenchReport, out_dir: str | Path, labels: Labels | None = None, title: str = "edgemm bench",
                 plots: bool = True) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    paths = (write_text(out_dir / "report.json", report.to_json()),
             write_text(out_dir / "report.md", to_markdown(report, labels, title)))
    if plots:
        plot([report], out_dir, labels)
    return paths
