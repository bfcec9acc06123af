"""Benchmark suite for the demo: the trained model (torch eager vs ONNX Runtime, 1 and all threads)
and the default compression recipe side by side (torch fp32, ORT fp32, compressed).

Trains/exports the demo first when ``runs/demo`` is missing or outdated (``edgemm demo`` does
the same), then writes ``benchmarks/results/*-<machine>.{json,md}``. The README's results
tables come from here. Run: ``python benchmarks/run_demo_suite.py`` (or ``make bench``).
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from edgemm.api import bench
from edgemm.artifacts import write_json, write_text
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.compress.pipeline import compress
from edgemm.demo import run_demo
from edgemm.environment import cpu_model

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--recipe", default="prune-distill-int8")
    args = parser.parse_args()
    machine = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    demo = run_demo(args.run_dir, bench=True)
    write_json(RESULTS / f"demo-accuracy-{machine}.json", demo.accuracy)
    artifacts = [str(args.run_dir), str(args.run_dir / "onnx" / "model.onnx")]
    sections = []
    for threads in sorted({1, os.cpu_count() or 1}):
        report, _ = bench(artifacts, batch_sizes=(1, 16), threads=threads, splits=("test", "ood"), rounds=3,
                          timing=TimingSettings(warmup=20, min_iterations=150, min_seconds=args.min_seconds))
        write_json(RESULTS / f"demo-{machine}-{threads}t.json", report)
        sections.append(to_markdown(report).replace("## edgemm bench", f"### {threads} thread(s)"))
    write_text(RESULTS / f"demo-{machine}.md", "## Demo model: torch eager vs ONNX Runtime\n\n" + "\n".join(sections))
    result = compress(str(args.run_dir), args.recipe, Path("runs") / f"compress-{args.recipe}")
    write_json(RESULTS / f"compress-{args.recipe}-{machine}.json", {"gates": result.gates, "stages": result.stages,
                                                                   "report": result.report})
    write_text(RESULTS / f"compress-{args.recipe}-{machine}.md", (result.out_dir / "report.md").read_text())
    print("\n".join(sections))
    print((result.out_dir / "report.md").read_text())


if __name__ == "__main__":
    main()
