"""Benchmark suite for the demo model: torch eager vs ONNX Runtime CPU, 1 and all threads.

Trains/exports the demo first if ``runs/demo`` is missing (``edgemm demo`` does the same),
then writes ``benchmarks/results/demo-<machine>.{json,md}``. The README's results table
comes from here. Run: ``python benchmarks/run_demo_suite.py [--run-dir runs/demo]``.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.api import bench
from edgemm.artifacts import read_manifest, write_json, write_text
from edgemm.environment import cpu_model

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args()
    if not (read_manifest(args.run_dir / "onnx") or {}).get("complete"):
        from edgemm.demo import run_demo
        run_demo(args.run_dir)
    artifacts = [str(args.run_dir), str(args.run_dir / "onnx" / "model.onnx")]
    machine = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    sections = []
    for threads in sorted({1, os.cpu_count() or 1}):
        report, _ = bench(artifacts, batch_sizes=(1, 16), threads=threads, splits=("test", "ood"), rounds=3,
                          timing=TimingSettings(warmup=20, min_iterations=150, min_seconds=args.min_seconds))
        write_json(RESULTS / f"demo-{machine}-{threads}t.json", report)
        sections.append(to_markdown(report).replace("## edgemm bench", f"### {threads} thread(s)"))
        print(sections[-1])
    write_text(RESULTS / f"demo-{machine}.md", f"## Demo model: torch eager vs ONNX Runtime\n\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
