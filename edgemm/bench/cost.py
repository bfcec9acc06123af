"""Work and the machine's roof: FLOPs per item, an artifact's precision, and the measured GEMM
peak of each precision, so that every artifact is compared with the peak of its own precision."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from edgemm.errors import USER_CODE_ERRORS
from edgemm.lazy import lazy_import
from edgemm.runtime.convert import to_tensors
from edgemm.runtime.memory import inferred_graph, one_item
from edgemm.runtime.threads import torch_threads
from edgemm.spec import ModelSpec

torch = lazy_import("torch")
flop_counter = lazy_import("torch.utils.flop_counter")  # a submodule `import torch` does not load
onnx = lazy_import("onnx")
ort = lazy_import("onnxruntime")

Precision = Literal["fp32", "fp16", "int8"]
INT8_OPS = {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
PEAK_SIZE = 1024


def onnx_flops(path: Path, spec: ModelSpec, sizes: dict[str, int] | None = None) -> int | None:
    """Multiply-accumulate FLOPs (2 per MAC) of Conv/MatMul/Gemm for one item at ``sizes`` (default: the
    spec's opt sizes; bench passes those of the input it timed)."""
    try:
        model = inferred_graph(path, spec, one_item(spec, "opt", **(sizes or {})))
    except Exception:  # shape inference is best effort: no figure rather than a wrong one
        return None
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    # Q/DQ graphs feed weights through DequantizeLinear: the shape is that of its input.
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    total = 0
    for node in model.graph.node:
        ins = [shapes.get(x) for x in node.input[:2]]
        out = shapes.get(node.output[0])
        if node.op_type in ("Conv", "ConvInteger") and ins[1] and out:
            total += 2 * int(np.prod(out)) * int(np.prod(ins[1][1:]))
        elif node.op_type in ("MatMul", "Gemm", "MatMulInteger") and ins[0] and out and all(ins[0]):
            total += 2 * int(np.prod(out)) * ins[0][-1]
    return total or None


def torch_flops(module: Any, spec: ModelSpec, sizes: dict[str, int] | None = None) -> int | None:
    """FLOPs of one item through a torch module (torch.utils.flop_counter), on the CPU, at ``sizes`` (default:
    the spec's opt sizes)."""
    inputs = to_tensors(spec, spec.example_inputs(one_item(spec, "opt", **(sizes or {}))))
    counter = flop_counter.FlopCounterMode(display=False)
    try:
        with counter, torch.inference_mode():
            module(*inputs)
    except USER_CODE_ERRORS:  # a figure, not a check: a forward that fails is reported when the model runs
        return None
    return int(counter.get_total_flops()) or None


def onnx_precision(path: Path) -> Precision:
    """int8 when the graph quantizes anything, fp16 when it holds half-precision weights, else fp32."""
    graph = onnx.load(str(path), load_external_data=False).graph
    if any(node.op_type in INT8_OPS for node in graph.node):
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer):
        return "fp16"
    return "fp32"


def engine_precision(path: Path) -> Precision:
    """What a TensorRT engine was built to run, from the key edgemm writes beside it."""
    return json.loads(path.with_name(path.name + ".json").read_text())["key"]["precision"]


def torch_precision(module: Any) -> Precision:
    dtypes = {p.dtype for p in module.parameters()}
    return "fp16" if dtypes and dtypes <= {torch.float16, torch.bfloat16} else "fp32"


def _best_rate(fn: Callable[[], object], ops: float, seconds: float) -> float:
    """Best ops/s of ``fn`` over ``seconds`` (after one warm-up call), in G/s."""
    fn()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        best = max(best, ops / (time.perf_counter() - start) / 1e9)
    return best


# Opset 18 came with IR version 8. onnx's default is its own newest IR (14 in onnx 1.23), which an older
# onnxruntime refuses ("Unsupported model IR version: 14, max supported IR version: 13", ORT 1.30).
GEMM_OPSET, GEMM_IR_VERSION = 18, 8


def gemm_model(op: str, a: np.ndarray, b: np.ndarray) -> Any:
    """A one-node graph: MatMul (fp32) or MatMulInteger (u8 x s8, the x86 int8 scheme)."""
    h = onnx.helper
    elem = {np.dtype("float32"): onnx.TensorProto.FLOAT, np.dtype("uint8"): onnx.TensorProto.UINT8,
            np.dtype("int8"): onnx.TensorProto.INT8}
    out_type = onnx.TensorProto.INT32 if op == "MatMulInteger" else onnx.TensorProto.FLOAT
    graph = h.make_graph([h.make_node(op, ["a", "b"], ["c"])], "gemm",
                         [h.make_tensor_value_info("a", elem[a.dtype], a.shape),
                          h.make_tensor_value_info("b", elem[b.dtype], b.shape)],
                         [h.make_tensor_value_info("c", out_type, (a.shape[0], b.shape[1]))])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", GEMM_OPSET)], ir_version=GEMM_IR_VERSION)


def _ort_gemm(op: str, a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(gemm_model(op, a, b).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a, "b": b})


@functools.lru_cache(maxsize=8)
def gemm_peaks(threads: int, seconds: float = 1.0) -> dict[str, float]:
    """The machine's measured GEMM throughput per precision (GFLOP/s or GOP/s), the roofs for efficiency.

    fp32: the better of torch.mm and ONNX Runtime's MatMul; int8: ONNX Runtime's MatMulInteger
    with u8 activations and s8 weights (``torch._int_mm`` has no fast CPU kernel). Measured once
    per process and thread count: the machine does not change between two bench runs.
    """
    n, ops = PEAK_SIZE, 2 * PEAK_SIZE ** 3
    rng = np.random.default_rng(0)
    a32, b32 = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    with torch_threads(threads):
        ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
        fp32 = max(_best_rate(lambda: torch.mm(ta, tb), ops, seconds / 2),
                   _best_rate(_ort_gemm("MatMul", a32, b32, threads), ops, seconds / 2))
    a8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b8 = rng.integers(-128, 128, (n, n), dtype=np.int8)
    int8 = _best_rate(_ort_gemm("MatMulInteger", a8, b8, threads), ops, seconds)
    return {"fp32": round(fp32, 1), "int8": round(int8, 1)}
