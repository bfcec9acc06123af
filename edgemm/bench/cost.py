"""Work and machine peak: FLOPs per item, the machine's measured GEMM peak, memory (RSS)."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from edgemm.spec import ModelSpec


def onnx_flops(path: Path, spec: ModelSpec) -> int | None:
    """Multiply-accumulate FLOPs (2 per MAC) of Conv/MatMul/Gemm at batch 1 and the spec's typical sizes."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    sizes = spec.sizes("opt", batch=1)
    for value in model.graph.input:
        if value.name in spec.input_names:
            for dim, want in zip(value.type.tensor_type.shape.dim, spec.input(value.name).concrete_shape(sizes)):
                dim.Clear()
                dim.dim_value = want
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
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
        if node.op_type == "Conv" and ins[1] and out:
            total += 2 * int(np.prod(out)) * int(np.prod(ins[1][1:]))
        elif node.op_type in ("MatMul", "Gemm") and ins[0] and out and all(ins[0]):
            total += 2 * int(np.prod(out)) * ins[0][-1]
    return total or None


def torch_flops(module, spec: ModelSpec) -> int | None:
    """FLOPs of one item through a torch module (torch.utils.flop_counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgemm.train import to_tensors

    inputs = to_tensors(spec, spec.example_inputs(spec.sizes("opt", batch=1)))
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*inputs)
    return int(counter.get_total_flops()) or None


def gemm_peak_gflops(threads: int, size: int = 1024, seconds: float = 0.5) -> float:
    """Measured fp32 GEMM throughput with ``threads`` threads: the roof for efficiency figures."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    torch.set_num_threads(previous)
    return best


def rss_mb() -> float:
    """Current resident set size of this process."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, IndexError, ValueError):
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
