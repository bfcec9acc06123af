"""Render a bench report (dict, as written to JSON) as Markdown; write both atomically."""
from __future__ import annotations

from pathlib import Path

from edgemm.artifacts import write_json, write_text
from edgemm.environment import describe


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
        times = [f"{lat[b][k]:.3f}" if b in lat else "-" for b in batches for k in ("p50_ms", "p90_ms", "p99_ms")]
        rows.append([r["model"], r["backend"], _count(r["parameters"]), _size(r["size_bytes"])] + acc + times
                    + [f"{lat[batches[-1]]['throughput_per_s']:.0f}" if batches[-1] in lat else "-"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    untrained = [r["model"] for r in results if not r["trained"]]
    notes = [f"Measured {report['created']} on {describe(report['machine'])}.",
             f"Latency: {report['settings']['rounds']} alternating rounds per batch size, "
             f"≥{report['settings']['timing']['min_iterations']} timed calls after "
             f"{report['settings']['timing']['warmup']} warm-up calls; raw samples are in the JSON report."]
    if untrained:
        notes.append(f"Untrained (random) weights: {', '.join(untrained)} — accuracy is meaningless there.")
    return "## edgemm bench\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    return write_json(out_dir / "report.json", report), write_text(out_dir / "report.md", to_markdown(report))
