"""Q/DQ placement, measured: narrow (Q/DQ on Conv/MatMul/Gemm only, onnxruntime's default) against auto
(edgemm's default: the small ops between them quantized where that removes int8<->float transitions).

Quantizes a model's fp32 ONNX both ways with the same calibration samples and quantize settings (every
tower int8, no fallback: the placement alone differs), then benches fp32, narrow and auto in one run
(ONNX Runtime CPU, 1 thread, batch 1 and 16, accuracy on the splits given, ``--profile`` for the
stand-alone Q/DQ nodes left after ORT's fusions and the time per op type and tower).

    python benchmarks/placement.py runs/demo/onnx/model.onnx --out benchmarks/results/amd-epyc/placement
    python benchmarks/placement.py runs/tux-int8/01-export/model.onnx --tower-mode text=dynamic --split test ...
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from edgemm.api import bench
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.compress.calibration import calibration_feeds
from edgemm.compress.quantizer import QUANTIZERS
from edgemm.export.profiles import load_profile
from edgemm.models.registry import resolve_model


def quantize_both(fp32: Path, work: Path, profile: str, samples: int, tower_modes: dict[str, str]) -> dict[str, Path]:
    spec = resolve_model(str(fp32)).spec
    feeds = calibration_feeds(spec, spec.dataset, "train", samples)
    scheme, ort = load_profile(profile).quantization, QUANTIZERS.get("ort")
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(fp32, work / "fp32.onnx")
    graphs = {"ORT fp32": work / "fp32.onnx"}
    for placement in ("narrow", "auto"):
        config = ort.config(stage="quantize", placement=placement, tower_modes=tower_modes)
        graphs[f"int8, {placement} placement"] = ort.quantize(work / "fp32.onnx", work / f"int8-{placement}.onnx",
                                                              feeds, scheme, config, [])
    return graphs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", type=Path, help="an fp32 ONNX written by edgemm (it carries the contract)")
    parser.add_argument("--profile", default="x86-cpu")
    parser.add_argument("--samples", type=int, default=256, help="calibration samples (train split)")
    parser.add_argument("--tower-mode", action="append", default=[], help="TOWER=static|dynamic (repeatable)")
    parser.add_argument("--split", action="append", default=None, help="accuracy splits (default: test, ood)")
    parser.add_argument("--work", type=Path, default=Path("runs/placement"))
    parser.add_argument("--out", type=Path, help="folder for report.json + report.md")
    args = parser.parse_args()
    modes = dict(item.split("=", 1) for item in args.tower_mode)
    graphs = quantize_both(args.fp32, args.work, args.profile, args.samples, modes)
    timing = TimingSettings(warmup=20, min_iterations=100, min_seconds=3.0, rounds=3)
    report, written = bench([str(p) for p in graphs.values()], labels=list(graphs), batch_sizes=(1, 16), threads=1,
                            splits=tuple(args.split or ("test", "ood")), timing=timing, profile=True, out_dir=args.out)
    print(to_markdown(report, title=f"Q/DQ placement: {args.fp32}"))
    if written:
        print("written:", *written)


if __name__ == "__main__":
    main()
