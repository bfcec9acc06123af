"""edgemm int8 vs plain ``onnxruntime.quantization.quantize_static`` (default settings), same model and data.

Both quantize the demo's fp32 ONNX export with the same 512 calibration samples (train split);
accuracy on test/ood and ORT CPU latency are measured in one bench run (1 thread, alternating).
Writes ``benchmarks/results/<machine>/int8-vs-ort-defaults.{json,md}``.
Needs ``runs/demo`` (``edgemm demo``) first; reuses ``runs/compress-int8`` from the suite.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import onnx

from edgemm.api import bench, compress
from edgemm.artifacts import write_text
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.compress.calibration import calibration_feeds
from edgemm.compress.quantizers.ort import calibration_reader, preprocess
from edgemm.environment import cpu_model
from edgemm.export.targets.onnx import save_onnx
from edgemm.models.registry import resolve_model

RESULTS = Path(__file__).parent / "results"


def plain_quantize_static(fp32: Path, out: Path, feeds) -> Path:
    """What a user gets from the ORT docs' default call (after the recommended pre-processing)."""
    from onnxruntime.quantization import quantize_static

    pre = preprocess(fp32, out.with_name("plain.pre.onnx"))
    quantize_static(str(pre), str(out), calibration_reader(feeds))
    return save_onnx(onnx.load(str(out)), resolve_model(str(fp32)).spec, out)  # the contract lets bench score it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--work", type=Path, default=Path("runs/int8-compare"))
    args = parser.parse_args()
    ours = compress(str(args.run_dir), "int8", Path("runs/compress-int8"), log=print).final  # reused if unchanged
    fp32 = Path("runs/compress-int8/01-export/model.onnx")  # the same model's validated fp32 export
    spec = resolve_model(str(fp32)).spec
    args.work.mkdir(parents=True, exist_ok=True)
    feeds = calibration_feeds(spec, spec.dataset, "train", 512)  # what the int8 recipe calibrates on
    plain = plain_quantize_static(fp32, args.work / "plain_defaults.onnx", feeds)
    shutil.copy(ours, args.work / "edgemm_int8.onnx")
    report, _ = bench([str(fp32), str(plain), str(args.work / "edgemm_int8.onnx")], batch_sizes=(1, 16), threads=1,
                      splits=("test", "ood"), labels=["ORT fp32", "quantize_static defaults",
                                                      "edgemm int8 (x86-cpu scheme)"],
                      timing=TimingSettings(warmup=20, min_iterations=150, min_seconds=3.0, rounds=3))
    markdown = to_markdown(report, title="edgemm int8 vs quantize_static defaults (demo model)")
    machine = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    write_text(RESULTS / machine / "int8-vs-ort-defaults.json", report.to_json())
    write_text(RESULTS / machine / "int8-vs-ort-defaults.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
