"""Speed-aware fallback, measured: which towers' int8 pays on this machine (ONNX Runtime CPU, 1 thread).

Quantizes a model's fp32 ONNX with every tower in int8 (the profile's scheme, as the int8 recipe does
before any fallback), then runs ``edgemm.compress.speed.keep_int8_where_it_pays`` with the real timer
at each batch size, and profiles the graphs before and after (stand-alone Q/DQ nodes left after ORT's
fusions, kernel time). Prints a Markdown table; ``--out`` writes it.

    python benchmarks/speed_fallback.py runs/demo/onnx/model.onnx --out benchmarks/results/amd-epyc/speed_fallback.md
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx

from edgemm.artifacts import write_text
from edgemm.bench.profile import profile_onnx
from edgemm.compress.calibration import calibration_feeds
from edgemm.compress.quantizer import QUANTIZERS
from edgemm.compress.speed import SpeedSettings, batch_feeds, keep_int8_where_it_pays, ort_time_pair
from edgemm.environment import cpu_model
from edgemm.export.profiles import load_profile
from edgemm.models.graph_towers import nodes_by_tower
from edgemm.models.registry import LoadedModel, resolve_model


def measure(fp32: Path, profile: str, batch_sizes: list[int], seconds: float) -> str:
    model = resolve_model(str(fp32))
    spec, scheme = model.spec, load_profile(profile).quantization
    feeds = calibration_feeds(spec, spec.dataset, "train", 256)
    ort = QUANTIZERS.get("ort")
    config = ort.config(stage="quantize")
    lines = [f"## Speed-aware fallback: {spec.name} ({fp32}), {profile} scheme",
             "", f"Measured on {cpu_model()}, ONNX Runtime CPU, 1 thread, medians of calls alternated one by one "
                 f"({seconds:g} s per comparison); a tower keeps int8 at >= {SpeedSettings().min_speedup}x.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        groups = nodes_by_tower(onnx.load(str(ort.prepare(fp32, work))), scheme.op_types,
                                {i.name: i.tower_name for i in spec.inputs})

        def quantize(out: Path, keep: list[str]) -> Path:
            return ort.quantize(fp32, out, feeds, scheme, config, keep)

        all_int8 = quantize(work / "all.onnx", [])
        lines += ["| batch | tower | int8 ms | float ms | int8 speed-up | kept |", "|---|---|---|---|---|---|"]
        summary = []
        for batch in batch_sizes:
            settings = SpeedSettings(batch_sizes=[batch], seconds=seconds)
            feed = batch_feeds(feeds, [batch], spec)[0]
            timer = ort_time_pair([feed], seconds)
            (work / f"b{batch}").mkdir()
            chosen, _, decisions = keep_int8_where_it_pays(all_int8, [], groups, quantize, work / f"b{batch}",
                                                           settings, timer)
            lines += [f"| {batch} | {d.tower} | {d.int8_ms:.3f} | {d.float_ms:.3f} | {d.speedup:.2f}x | {d.kept} |"
                      for d in decisions]
            fp32_ms, before_ms = timer(fp32, all_int8)
            _, after_ms = timer(fp32, chosen)
            qdq = [profile_onnx(LoadedModel(spec, str(p), "onnx", onnx_path=p), feed, 1).standalone_qdq_nodes
                   for p in (all_int8, chosen)]
            summary.append(f"| {batch} | {fp32_ms:.3f} | {before_ms:.3f} ({fp32_ms / before_ms:.2f}x) | "
                           f"{after_ms:.3f} ({fp32_ms / after_ms:.2f}x) | {qdq[0]} → {qdq[1]} |")
    lines += ["", "A tower shown as int8 below the threshold was put back by the final check: the float placements "
                  "together were not faster than the start.",
              "", "| batch | ORT fp32 ms | all towers int8 | after the speed fallback | stand-alone Q/DQ nodes |",
              "|---|---|---|---|---|", *summary, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", type=Path, help="an fp32 ONNX written by edgemm export (it carries the contract)")
    parser.add_argument("--profile", default="x86-cpu")
    parser.add_argument("--batch-size", type=int, action="append", default=None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = measure(args.fp32, args.profile, args.batch_size or [1, 16], args.seconds)
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
