"""Bench reports: Markdown (CI comments), PNG plots, JSON schema validation, run comparison."""
from __future__ import annotations

import json
from pathlib import Path

from edgemm.artifacts import write_json, write_text
from edgemm.environment import describe

SCHEMA = Path(__file__).with_name("report.schema.json")


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


def to_markdown(report: dict) -> str:
    results = report["results"]
    splits = report["settings"]["splits"]
    batches = report["settings"]["batch_sizes"]
    head = (["model", "backend", "params", "size"] + [f"acc {s}" for s in splits]
            + [f"b{b} {k}" for b in batches for k in ("p50 ms", "p90 ms", "p99 ms")]
            + [f"b{batches[-1]} items/s"])
    rows = []
    for r in results:
        lat = {entry["batch_size"]: entry for entry in r["latency"]}
        acc = [f"{100 * r['accuracy'][s]:.1f} %" if s in r["accuracy"] else "-" for s in splits]
        times = [f"{lat[b][k]:.3f}{'*' if k == 'p50_ms' and lat[b].get('noisy') else ''}" if b in lat else "-"
                 for b in batches for k in ("p50_ms", "p90_ms", "p99_ms")]
        rows.append([r["model"], r["backend"], _count(r["parameters"]), _size(r["size_bytes"])] + acc + times
                    + [f"{lat[batches[-1]]['throughput_per_s']:.0f}" if batches[-1] in lat else "-"])
    detail = []
    for r in results:
        lat = {entry["batch_size"]: entry for entry in r["latency"]}
        ci = ", ".join(f"b{b} [{lat[b]['p50_ci95_ms'][0]:.3f}, {lat[b]['p50_ci95_ms'][1]:.3f}]" for b in batches if b in lat)
        fid = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in r.get("fidelity", {}).items() if "top1" in k)
        eff = f"{100 * r['efficiency']:.1f} %" if r.get("efficiency") is not None else "-"
        flops = f"{r['flops_per_item'] / 1e6:.1f} M" if r.get("flops_per_item") else "-"
        detail.append([r["model"], r["backend"], ci, flops, eff, fid or "-"])
    untrained = [r["model"] for r in results if not r["trained"]]
    machine = report["machine"]
    notes = [f"Measured {report['created']} on {describe(machine)}; fp32 GEMM peak "
             f"{machine.get('peak_gflops_fp32', '-')} GFLOP/s with {machine.get('threads')} thread(s); "
             f"bench process peak RSS {machine.get('peak_rss_mb', '-')} MB.",
             f"Latency: {report['settings']['rounds']} alternating rounds per batch size, "
             f"≥{report['settings']['timing']['min_iterations']} timed calls after "
             f"{report['settings']['timing']['warmup']} warm-up calls; raw samples are in the JSON report. "
             "`*` marks a p50 whose 95 % confidence interval is wider than ±5 % (noisy)."]
    if untrained:
        notes.append(f"Untrained (random) weights: {', '.join(untrained)} — accuracy is meaningless there.")
    warnings = "".join(f"\n> ⚠️ {w}" for w in report.get("warnings", []))
    from edgemm.bench.breakdown import breakdown_markdown

    breakdowns = "".join(f"\n### Where the time goes: {r['model']} ({r['backend']})\n\n{breakdown_markdown(r['breakdown'])}"
                         for r in results if r.get("breakdown"))
    return ("## edgemm bench\n\n" + _table(head, rows) + "\n\n"
            + _table(["model", "backend", "p50 95 % CI (ms)", "FLOPs/item", "efficiency vs GEMM peak",
                      "fidelity vs first"], detail)
            + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n" + (warnings + "\n" if warnings else "")
            + breakdowns)


def validate_report(report: dict) -> None:
    """Raise jsonschema.ValidationError when the report does not follow report.schema.json."""
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA.read_text()))


def plot(reports: list[dict], out_dir: Path) -> list[Path]:
    """Accuracy-vs-latency Pareto chart of all variants, and latency distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for rep in reports for r in rep["results"]]
    split = next(iter(reports[0]["settings"]["splits"]), None)
    batch = min(reports[0]["settings"]["batch_sizes"])
    points = [(next(e["p50_ms"] for e in r["latency"] if e["batch_size"] == batch), 100 * r["accuracy"][split],
               f"{r['model']} [{r['backend']}]") for r in results if split in r.get("accuracy", {})]
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
    batches = reports[0]["settings"]["batch_sizes"]
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
        data = [next(e["samples_ms"] for e in r["latency"] if e["batch_size"] == b) for r in results]
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(results) + 1), [f"{r['model']}\n{r['backend']}" for r in results], fontsize=7)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"batch {b}: latency distribution")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> Path:
    from edgemm.artifacts import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def write_report(report: dict, out_dir: str | Path, plots: bool = True) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    paths = write_json(out_dir / "report.json", report), write_text(out_dir / "report.md", to_markdown(report))
    if plots:
        plot([report], out_dir)
    return paths
