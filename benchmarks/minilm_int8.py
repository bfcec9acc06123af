"""The MiniLM text tower alone: fp32 ONNX vs dynamic int8 (onnxruntime.quantization, per-channel, 7-bit weights
where the CPU lacks VNNI), on the Tux Paint captions: latency at batch 1 and 16 (1 thread) and cosine to fp32.

    python benchmarks/minilm_int8.py [OUT]   # after `python benchmarks/tuxpaint.py data`; OUT: the results folder
                                             # (default benchmarks/results/amd-epyc/minilm)
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402

from edgemm import api  # noqa: E402
from edgemm.bench.latency import TimingSettings  # noqa: E402
from edgemm.environment import x86_without_vnni  # noqa: E402
from edgemm.export.targets.onnx import save_onnx  # noqa: E402
from edgemm.data.datasets import load_split  # noqa: E402
from edgemm.models.registry import resolve_model  # noqa: E402
from edgemm.runtime import load_session, task_outputs  # noqa: E402

CACHE = Path.home() / ".cache" / "edgemm" / "tuxpaint" / "data"


def main(out: Path = ROOT / "benchmarks" / "results" / "amd-epyc" / "minilm",
         work: Path = ROOT / "runs" / "minilm") -> None:
    if not (CACHE / "metadata.csv").is_file():
        raise SystemExit("skipped: run `python benchmarks/tuxpaint.py data` first (the captions)")
    fp32 = api.export("minilm-l6", out_dir=work / "fp32", data=str(CACHE)).path
    int8 = work / "int8.onnx"
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"], reduce_range=x86_without_vnni())
    import onnx
    save_onnx(onnx.load(str(int8)), resolve_model(str(fp32)).spec, int8)  # carries the contract and data
    report, paths = api.bench([str(fp32), str(int8)], labels=["MiniLM fp32 (ORT)", "MiniLM dynamic int8 (ORT)"],
                              batch_sizes=(1, 16), threads=1, splits=("test",),
                              timing=TimingSettings(warmup=10, min_iterations=60, min_seconds=1.0, rounds=3),
                              out_dir=out)
    a, b = report.results
    for batch in (1, 16):
        print(f"batch {batch}: fp32 {a.at(batch).p50_ms:.2f} ms, int8 {b.at(batch).p50_ms:.2f} ms, "
              f"{a.at(batch).p50_ms / b.at(batch).p50_ms:.2f}x")
    fp32_model, int8_model = resolve_model(str(fp32)), resolve_model(str(int8))
    test = load_split(str(CACHE), "test", fp32_model.spec)  # the captions, tokenised as the contract says
    reference, candidate = (task_outputs(load_session(m, threads=1), test) for m in (fp32_model, int8_model))
    cosines = (reference * candidate).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1))
    print(f"cosine of int8 to fp32 on {len(test)} test captions: mean {cosines.mean():.4f}, min {cosines.min():.4f}")
    print(f"wrote {paths[1]}")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:2]))
