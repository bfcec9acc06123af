"""Where the compressed demo's batch-1 time goes: each tower cut out of the ONNX graph
(``onnx.utils.extract_model``, from its inputs to its embedding) and timed alone, fp32 export vs compressed,
and onnxruntime's transformer fusions (``onnxruntime.transformers.optimizer``) on the compressed graph.

    python benchmarks/demo_overhead.py runs/compress-default    # after `edgemm compress -o runs/compress-default`

1 thread, plain ``InferenceSession.run`` on one real test sample, 200 warm-up calls, then 3 rounds of 1,000
calls alternating between the graphs compared; the median of the rounds' medians.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent.parent))

from edgemm.data.datasets import load_split  # noqa: E402
from edgemm.models.registry import resolve_model  # noqa: E402


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(graphs: list[tuple[Path, dict]], rounds: int = 3, calls: int = 1000) -> list[float]:
    """Per graph, the median over ``rounds`` of the median call time; rounds alternate between the graphs so
    that a noisy stretch of this shared VM falls on all of them."""
    runs = [(session(path).run, feed) for path, feed in graphs]
    for run, feed in runs:
        for _ in range(200):
            run(None, feed)
    medians: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for i, (run, feed) in enumerate(runs):
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                run(None, feed)
                times.append(time.perf_counter() - start)
            medians[i].append(1e3 * float(np.median(times)))
    return [float(np.median(m)) for m in medians]


def tower_embeddings(path: Path) -> dict[str, str]:
    """Tower -> the tensor it hands the fusion head: the inputs of the Concat whose output feeds the head."""
    graph = onnx.load(str(path)).graph
    concat = [n for n in graph.node if n.op_type == "Concat" and len(n.input) == 3][-1]
    return dict(zip(("image", "audio", "text"), concat.input))  # the demo concatenates in this order


def main(run_dir: Path) -> None:
    spec = resolve_model("demo-fusion").spec
    sample = load_split("edgemm-digits", "test", spec).head(1).trimmed(spec).inputs
    graphs = {"ORT fp32 export": run_dir / "01-export" / "model.onnx", "compressed": run_dir / "final" / "model.onnx"}
    print("| graph | whole | " + " | ".join(f"{t} tower (nodes)" for t in ("image", "audio", "text")) + " |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        from onnxruntime.transformers.optimizer import optimize_model
        fused = optimize_model(str(graphs["compressed"]), model_type="bert", opt_level=0)
        counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        fused_path = Path(tmp) / "fused.onnx"
        fused.save_model_to_file(str(fused_path))
        whole = median_ms([(path, sample) for path in (*graphs.values(), fused_path)])
        for (label, path), ms in zip(graphs.items(), whole):
            cuts = []
            for tower, tensor in tower_embeddings(path).items():
                cut = Path(tmp) / f"{label}-{tower}.onnx".replace(" ", "_")
                onnx.utils.extract_model(str(path), str(cut), [tower], [tensor])
                cuts.append((cut, {tower: sample[tower]}))
            times = median_ms(cuts)
            cells = [f"{ms:.3f} ms"] + [f"{t:.3f} ms ({len(onnx.load(str(cut)).graph.node)})"
                                        for (cut, _), t in zip(cuts, times)]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        print(f"\nonnxruntime transformer fusions on the compressed graph {counts}: "
              f"{whole[1]:.3f} ms without, {whole[2]:.3f} ms with")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/compress-default"))
