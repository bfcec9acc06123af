"""Q/DQ placement: which small ops between the int8 Conv/MatMul/Gemm are quantized too.

ONNX Runtime's CPU kernels run int8 through Add, Mul, Concat, pooling and Sigmoid (QLinear* ops), drop
the Q/DQ around Reshape/Transpose/Flatten/Squeeze/MaxPool, and fold a Relu/Clip into the range of the
op before it. Every other border between int8 and float leaves a stand-alone QuantizeLinear or
DequantizeLinear that costs time (a quarter of the demo's kernel time). Quantizing a small op pays only
where it removes such borders: in a residual CNN block (Conv -> Add <- skip -> Relu -> Conv) the whole
block becomes one int8 chain, while a transformer's residual Add, which meets a float LayerNorm on both
sides, would only move the border and cost accuracy.

So the rule is local and needs no tower names: each connected group of such ops (linked through the
tensors they pass each other) is quantized if that leaves fewer tensors crossing between int8 and float
than keeping it float, counting the group's inputs and outputs against their int8 (quantized
Conv/MatMul/Gemm) or float neighbours. Ties stay float: no accuracy is risked for nothing.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from edgemm.lazy import lazy_import

onnx = lazy_import("onnx")

# Ops ONNX Runtime runs in int8 or fuses into their int8 neighbours when Q/DQ surround them.
CHAIN_OPS = ("Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Clip", "Sigmoid",
             "LeakyRelu", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")
ALL_INPUTS_CARRY_DATA = ("Add", "Mul", "Concat")  # the others: input 0 only (shape, axes, min/max are constants)


def data_inputs(node) -> list[str]:
    inputs = [name for name in node.input if name]
    return inputs if node.op_type in ALL_INPUTS_CARRY_DATA else inputs[:1]


def float_tensors(model) -> set[str]:
    """Names of the float32 tensors (ONNX shape inference; unknown types count as not float)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    typed = [*graph.input, *graph.output, *graph.value_info]
    floats = {v.name for v in typed if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return floats | {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}


def chain_nodes(model, int8_nodes: Iterable[str], excluded: Iterable[str] = (),
                floats: set[str] | None = None) -> set[str]:
    """The CHAIN_OPS nodes worth quantizing beside ``int8_nodes`` (the Conv/MatMul/Gemm quantized);
    ``floats``: the graph's float tensors, where the caller has them already."""
    graph, int8, excluded = model.graph, set(int8_nodes), set(excluded)
    floats = float_tensors(model) if floats is None else floats
    constants = {i.name for i in graph.initializer}
    producer = {out: node.name for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = defaultdict(list)  # every reader: a float Div reading input 1 counts too
    for node in graph.node:
        for name in dict.fromkeys(x for x in node.input if x and x not in constants):
            consumers[name].append(node.name)
    candidates = {node.name: node for node in graph.node
                  if node.op_type in CHAIN_OPS and node.name not in excluded and node.name not in int8
                  and all(x in floats for x in data_inputs(node)) and all(y in floats for y in node.output)}
    outputs = {o.name for o in graph.output}
    chosen: set[str] = set()
    for group in _connected(candidates, producer):
        if _crossings(group, candidates, producer, consumers, constants, outputs, int8, quantized=True) < \
                _crossings(group, candidates, producer, consumers, constants, outputs, int8, quantized=False):
            chosen |= group
    return chosen


def _connected(candidates: dict, producer: dict[str, str]) -> list[set[str]]:
    """Groups of candidates linked by a tensor one produces and another reads (union-find)."""
    parent = {name: name for name in candidates}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for name, node in candidates.items():
        for tensor in data_inputs(node):
            if producer.get(tensor) in candidates:
                parent[root(name)] = root(producer[tensor])
    groups: dict[str, set[str]] = defaultdict(set)
    for name in candidates:
        groups[root(name)].add(name)
    return list(groups.values())


def _crossings(group: set[str], candidates: dict, producer: dict[str, str], consumers: dict[str, list[str]],
               constants: set[str], outputs: set[str], int8: set[str], quantized: bool) -> int:
    """Tensors crossing between int8 and float at the group's border, with the group in int8 or float."""
    crossings = 0
    inputs = {t for name in group for t in data_inputs(candidates[name])
              if t not in constants and producer.get(t) not in group}
    for tensor in inputs:  # a graph input, or a neighbour's output: int8 if a quantized op made it
        crossings += (producer.get(tensor) in int8) != quantized
    for tensor in {out for name in group for out in candidates[name].output}:
        readers = [c for c in consumers.get(tensor, []) if c not in group]
        if quantized:  # a DequantizeLinear for float readers (or the graph's output)
            crossings += tensor in outputs or any(r not in int8 for r in readers)
        else:  # a QuantizeLinear for int8 readers
            crossings += any(r in int8 for r in readers)
    return crossings
