"""Q/DQ placement on small graphs, quantized by the ort backend and fused by ONNX Runtime as it runs them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from edgemm.bench.profile import standalone_qdq
from edgemm.compress.placement import chain_nodes
from edgemm.compress.quantizer import QUANTIZERS
from edgemm.export.profiles import load_profile

X86 = load_profile("x86-cpu").quantization
RNG = np.random.default_rng(0)
CHANNELS = 8


def _weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(0, 0.3, shape).astype(np.float32), name)


def _model(nodes, inits, shape_in, shape_out) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def residual_block() -> onnx.ModelProto:
    """stem Conv -> Relu -> [Conv -> Relu -> Conv -> Add(skip) -> Relu] -> head Conv."""
    def conv(name: str, x: str, y: str):
        w, b = _weight(f"{name}.w", (CHANNELS, CHANNELS, 3, 3)), _weight(f"{name}.b", (CHANNELS,))
        return helper.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[1] * 4), [w, b]

    nodes, inits = [], []
    for name, x, y in [("stem", "x", "s"), ("conv1", "skip", "a"), ("conv2", "r1", "b"), ("head", "r2", "y")]:
        node, weights = conv(name, x, y)
        nodes.append(node)
        inits += weights
    nodes.insert(1, helper.make_node("Relu", ["s"], ["skip"], name="relu0"))
    nodes.insert(3, helper.make_node("Relu", ["a"], ["r1"], name="relu1"))
    nodes[5:5] = [helper.make_node("Add", ["b", "skip"], ["sum"], name="residual_add"),
                  helper.make_node("Relu", ["sum"], ["r2"], name="relu2")]
    shape = [1, CHANNELS, 8, 8]
    return _model(nodes, inits, shape, shape)


def layernorm_boundary() -> onnx.ModelProto:
    """MatMul -> Reshape -> LayerNorm -> (MatMul, MatMul) -> Add, 3-D as in a transformer: LayerNorm has
    no int8 kernel."""
    width = 16
    inits = [_weight("w0", (width, width)), _weight("wa", (width, width)), _weight("wb", (width, width)),
             _weight("gamma", (width,)), _weight("beta", (width,)),
             numpy_helper.from_array(np.array([2, 2, width], dtype=np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="proj"),
             helper.make_node("Reshape", ["h", "shape"], ["h2"], name="reshape"),
             helper.make_node("LayerNormalization", ["h2", "gamma", "beta"], ["n"], name="norm", axis=-1),
             helper.make_node("MatMul", ["n", "wa"], ["a"], name="branch_a"),
             helper.make_node("MatMul", ["n", "wb"], ["b"], name="branch_b"),
             helper.make_node("Add", ["a", "b"], ["y"], name="merge")]
    return _model(nodes, inits, [1, 4, width], [2, 2, width])


def optimized_graph(path: Path, out: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime CPU runs (its hardware-independent fusions: QLinear ops from Q/DQ)."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(out))


def _quantize(model: onnx.ModelProto, tmp_path: Path, placement: str) -> onnx.ModelProto:
    """The ort backend's static int8 with the x86 scheme, then the graph ONNX Runtime runs."""
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(model, fp32)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = [{"x": RNG.normal(size=shape).astype(np.float32)} for _ in range(8)]
    work = tmp_path / placement
    work.mkdir()
    ort = QUANTIZERS.get("ort")
    out = ort.quantize(fp32, work / "int8.onnx", feeds, X86, ort.config(stage="quantize", placement=placement), [])
    return optimized_graph(out, work / "optimized.onnx")


def _ops(graph: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in graph.graph.node]


def test_a_residual_block_keeps_one_int8_chain(tmp_path):
    auto = _quantize(residual_block(), tmp_path, "auto")
    # One Q where the float input enters, one DQ where the output leaves; int8 all the way in between.
    assert _ops(auto) == ["QuantizeLinear", "QLinearConv", "QLinearConv", "QLinearConv", "QLinearAdd",
                          "QLinearConv", "DequantizeLinear"]
    narrow = _quantize(residual_block(), tmp_path, "narrow")
    assert standalone_qdq(narrow) > standalone_qdq(auto) == 2  # the Add read float: transitions around it


def test_a_layernorm_boundary_gets_exactly_one_qdq_pair(tmp_path):
    graph = _quantize(layernorm_boundary(), tmp_path, "auto")
    produced_by = {out: node for node in graph.graph.node for out in node.output}
    norm = next(node for node in graph.graph.node if node.op_type == "LayerNormalization")
    # Into the LayerNorm: one DequantizeLinear on the way up from the int8 MatMul (the Reshape between them
    # runs on int8 or float, as ONNX Runtime moves the DQ)...
    path, upstream = [], produced_by[norm.input[0]]
    while not upstream.op_type.startswith("QLinear"):
        path.append(upstream.op_type)
        upstream = produced_by[upstream.input[0]]
    assert sorted(path) == ["DequantizeLinear", "Reshape"]
    # ...and out of it one QuantizeLinear that both int8 branches share.
    readers = [node for node in graph.graph.node if norm.output[0] in node.input]
    assert _ops(onnx.helper.make_model(onnx.helper.make_graph(readers, "r", [], []))) == ["QuantizeLinear"]
    assert sum(node.op_type == "QLinearMatMul" for node in graph.graph.node) == 3
    # The branches merge in int8: in the whole graph, the LayerNorm's pair and the graph's own entry and exit.
    assert standalone_qdq(graph) == 4 and "QLinearAdd" in _ops(graph)


def test_placement_keeps_a_transformer_residual_add_float():
    """x -> MatMul -> Add(x) -> LayerNorm: the Add reads the float stream and feeds a float LayerNorm, so int8
    there would only move the border (two crossings instead of one)."""
    width = 16
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Add", ["h", "x"], ["r"], name="residual_add"),
             helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["y"], name="norm", axis=-1)]
    model = _model(nodes, [_weight("w", (width, width)), _weight("gamma", (width,)), _weight("beta", (width,))],
                   [4, width], [4, width])
    assert chain_nodes(model, {"proj"}) == set()
    assert chain_nodes(residual_block(), {"stem", "conv1", "conv2", "head"}) == {"relu0", "relu1", "residual_add",
                                                                                "relu2"}
    # conv2 in float: relu1 between int8 conv1 and float conv2 stays float (one crossing either way); the
    # skip path stays int8, as one Q on conv2's output costs less than three around the Add.
    assert chain_nodes(residual_block(), {"stem", "conv1", "head"}) == {"relu0", "residual_add", "relu2"}


def test_a_float_op_reading_a_group_through_its_second_input_counts_as_a_crossing():
    """MatMul -> Relu -> Div(y, relu): the Div reads the Relu as its divisor. Quantizing the Relu would only
    move the DequantizeLinear from before it to before the Div, so it stays float."""
    width = 8
    inits = [_weight("w", (width, width)), numpy_helper.from_array(np.ones((1, width), np.float32), "one")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "one"], ["d"], name="shift"),  # a chain op reading r as input 0
             helper.make_node("Div", ["x", "d"], ["y"], name="div")]
    model = _model(nodes, inits, [4, width], [4, width])
    assert chain_nodes(model, {"mm"}) == set()


def test_the_graph_cache_follows_the_bytes_not_the_modification_time(tmp_path):
    """A graph replaced by another with the same modification time (a copy that keeps it, a coarse clock) is
    read again: placement must never plan one graph's chains from another's nodes."""
    ort = QUANTIZERS.get("ort")
    path = tmp_path / "fp32.pre.onnx"
    onnx.save(residual_block(), path)
    stamp = path.stat().st_mtime_ns
    _, excluded = ort.with_chains(path, X86, ["conv2"])
    assert "relu1" in excluded  # between int8 conv1 and float conv2
    onnx.save(layernorm_boundary(), path)
    os.utime(path, ns=(stamp, stamp))
    fresh = tmp_path / "fresh.onnx"
    onnx.save(layernorm_boundary(), fresh)
    assert ort.with_chains(path, X86, ["proj"]) == ort.with_chains(fresh, X86, ["proj"])
