"""Will TensorRT take this ONNX graph? A static check against the profile's TensorRT version, run
before anything is built (and by ``edgemm inspect``): operators the parser lacks, types it cannot
hold, Q/DQ it refuses or will not fuse, dynamic axes without a range, layers DLA cannot run.

Sources: the onnx-tensorrt operator table of TensorRT 10.16 and its restrictions [TRT §4], explicit
quantization rules [TRT §1], DLA limits [TRT §8.5]. The device's own parser has the last word; this
catches what is known before a device is at hand.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from edgemm.lazy import lazy_import
from edgemm.tensorrt.settings import TensorRTSettings

onnx = lazy_import("onnx")
numpy_helper = lazy_import("onnx.numpy_helper")

Severity = Literal["error", "warning", "info"]

# [TRT §4] "Not supported (N)" in the 10.16 parser.
UNSUPPORTED_OPS = frozenset("""AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor CenterCropPad
Col2Im Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool
MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement
QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert
SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit
TfIdfVectorizer Unique""".split())
# Integer-arithmetic ops come from ONNX Runtime's own int8 formats (QOperator, dynamic quantization).
ORT_INT8_OPS = frozenset({"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"})
OPSETS = {8: (7, 17), 10: (9, 24), 11: (9, 24)}  # 8.5 parses up to opset 17 (U); 10.16 and 11: 9-24 [TRT §4]
NOT_IN_85 = frozenset({"LayerNormalization", "GroupNormalization"})  # [TRT §4]: 8.5's table lists them as N
ADDED_IN_10_14 = frozenset({"Attention"})  # JetPack 6's 10.3 lacks it
# Q/DQ fuses into these (and residual Adds) [TRT §1, §8.1]; elsewhere it costs an int8<->float reformat.
QDQ_FUSES_INTO = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Add"})
# Layers DLA runs (NVIDIA "DLA Supported Layers and Restrictions"; list U: as remembered, the device's
# build log has the last word). Anything else runs on the GPU with GPU fallback, or fails the build.
DLA_OPS = frozenset("""Conv ConvTranspose Gemm MatMul Relu Sigmoid Tanh Clip LeakyRelu PRelu Elu Selu Softsign
Softplus HardSigmoid MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization InstanceNormalization
LRN Add Sub Mul Div Max Min Pow Equal Greater Less Concat Resize Softmax Slice Reshape Transpose Flatten Squeeze
Unsqueeze Abs Neg Sqrt Exp Log Sin Cos Atan ReduceMax ReduceMean QuantizeLinear DequantizeLinear Identity""".split())
DLA_MAX_DIM = 8192  # non-batch dimensions [TRT §8.5]


@dataclass
class Finding:
    severity: Severity
    where: str  # node name and operator, or the tensor/input named
    reason: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class CompatibilityReport:
    model: str
    tensorrt_major: int
    dla_core: int | None
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tensorrt_major": self.tensorrt_major, "dla_core": self.dla_core,
                "errors": len(self.errors), "findings": [f.to_dict() for f in self.findings]}


def check_onnx(path: str | Path, settings: TensorRTSettings, axes: Iterable[str] = ()) -> CompatibilityReport:
    """Every finding for ``path`` under ``settings``; ``axes`` are the dynamic axes that have a range
    (the contract's, plus ``tensorrt.shapes``)."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    found: list[Finding] = []
    found += _opset(model, settings.major)
    found += _operators(graph, settings.major)
    found += _types(graph)
    found += _quantization(graph)
    found += _dynamic_axes(graph, set(axes) | set(settings.shapes))
    if settings.dla.core is not None:
        found += _dla(graph, settings)
    return CompatibilityReport(str(path), settings.major, settings.dla.core, found)


def _where(node: Any, index: int) -> str:
    return f"{node.name or f'node #{index}'} ({node.op_type})"


def _opset(model: Any, major: int) -> list[Finding]:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    low, high = OPSETS[major]
    if version is None or low <= version <= high:
        return []
    return [Finding("error", "model", f"opset {version}: TensorRT {major} parses opsets {low}-{high}",
                    f"export with onnx.opset between {low} and {high} in the profile")]


def _operators(graph: Any, major: int) -> list[Finding]:
    found = []
    for i, node in enumerate(graph.node):
        op, where = node.op_type, _where(node, i)
        if node.domain not in ("", "ai.onnx"):
            found.append(Finding("error", where, f"operator of domain {node.domain!r}: the TensorRT ONNX parser "
                                 "reads standard ONNX only", "export without ONNX Runtime-specific fusions (no "
                                 "graph optimisation before the TensorRT build), or provide a TensorRT plugin"))
        elif op in ORT_INT8_OPS:
            found.append(Finding("error", where, f"{op} is ONNX Runtime's integer-arithmetic int8 (dynamic or "
                                 "QOperator quantization), which TensorRT does not parse",
                                 "quantize with static Q/DQ (QuantizeLinear/DequantizeLinear, symmetric) using a "
                                 "TensorRT profile (`edgemm compress --profile NAME`), or build fp16"))
        elif op in UNSUPPORTED_OPS:
            found.append(Finding("error", where, f"TensorRT's ONNX parser does not support {op}",
                                 f"replace {op} in the model's forward (or run that part outside the engine)"))
        elif major == 8 and op in NOT_IN_85:
            found.append(Finding("error", where, f"TensorRT 8.5 (JetPack 5) does not parse {op}",
                                 "export with opset 16 so it is decomposed into primitive ops"))
        elif major == 10 and op in ADDED_IN_10_14:
            found.append(Finding("warning", where, f"{op} is parsed from TensorRT 10.14 on; JetPack 6 ships 10.3",
                                 "export with a lower opset on JetPack 6 so attention is decomposed"))
        found += _restrictions(node, where, graph)
    return found


def _attribute(node: Any, name: str) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return None


def _restrictions(node: Any, where: str, graph: Any) -> list[Finding]:
    """The per-operator restrictions of [TRT §4] that a static look can decide."""
    op = node.op_type
    out = []
    if op == "Resize" and (_attribute(node, "mode") or b"nearest") == b"cubic":
        out.append(Finding("error", where, "Resize mode cubic is not supported", "use linear or nearest"))
    if op == "Resize" and _attribute(node, "antialias"):
        out.append(Finding("error", where, "Resize with antialias is not supported", "resize without antialias"))
    if op in ("MaxPool", "AveragePool") and len(node.output) > 1 and node.output[1]:
        out.append(Finding("error", where, "MaxPool's Indices output is not supported", "use the values only"))
    if op in ("MaxPool", "AveragePool", "LpPool") and any(d != 1 for d in _attribute(node, "dilations") or []):
        out.append(Finding("error", where, "pooling with dilation != 1 is not supported", "use dilations of 1"))
    if op == "TopK" and _attribute(node, "sorted") == 0:
        out.append(Finding("error", where, "TopK needs sorted=1", "sort the TopK output"))
    if op.startswith("Reduce") and len(node.input) > 1 and node.input[1] and node.input[1] not in _constants(graph):
        out.append(Finding("error", where, f"{op}'s axes must be a build-time constant", "reduce over constant axes"))
    return out


def _initializers(graph: Any) -> dict[str, Any]:
    return {t.name: t for t in graph.initializer}


def _constants(graph: Any) -> set[str]:
    """Tensors known at build time: initializers and Constant outputs (the parser takes both as weights)."""
    return set(_initializers(graph)) | {n.output[0] for n in graph.node if n.op_type == "Constant"}


def _weights(graph: Any) -> set[str]:
    """Constants, and Q/DQ outputs of constants (fake-quantized weights: W -> Q -> DQ -> Conv)."""
    weights = _constants(graph)
    for node in graph.node:  # graph order is topological: a Q's output is seen before its DQ
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] in weights:
            weights.add(node.output[0])
    return weights


def _types(graph: Any) -> list[Finding]:
    T = onnx.TensorProto
    found = []
    io = {v.name for v in list(graph.input) + list(graph.output)}
    for t in graph.initializer:
        if t.data_type == T.DOUBLE:
            found.append(Finding("warning", f"initializer {t.name}", "DOUBLE weights are cast to FP32 (and clamped to "
                                 "±FLT_MAX)", "export in float32"))
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        elem = v.type.tensor_type.elem_type
        if elem == T.DOUBLE:
            found.append(Finding("warning", f"tensor {v.name}", "DOUBLE is cast to FP32", "use float32"))
        if elem == T.UINT8 and v.name not in io:
            found.append(Finding("error", f"tensor {v.name}", "UINT8 is allowed only for network inputs/outputs",
                                 "keep uint8 at the graph's edges (cast inside the model to float)"))
    return found


def _quantization(graph: Any) -> list[Finding]:
    """Symmetric, constant zero points; per-tensor activations; Q/DQ where it fuses [TRT §1]."""
    np_ = __import__("numpy")
    init = _initializers(graph)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {n.output[0] for n in graph.node if n.op_type == "Constant"}
    weights = _weights(graph)
    found = []
    for i, node in enumerate(graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = _where(node, i)
        if len(node.input) > 2 and node.input[2]:
            zp = init.get(node.input[2])
            if zp is None and node.input[2] not in constants:
                found.append(Finding("error", where, "zero point is not a build-time constant",
                                     "give the zero point as an initializer"))
            elif zp is not None:
                if zp.data_type == onnx.TensorProto.UINT8:
                    found.append(Finding("error", where, "uint8 (asymmetric) quantization: TensorRT takes int8 with "
                                         "zero point 0 only", "quantize with a TensorRT profile (symmetric int8 "
                                                              "activations) instead of the CPU's uint8 scheme"))
                elif np_.any(numpy_helper.to_array(zp) != 0):
                    found.append(Finding("error", where, "asymmetric quantization (zero point != 0): TensorRT takes "
                                         "symmetric Q/DQ only", "quantize with symmetric_activations: true"))
        scale = init.get(node.input[1]) if len(node.input) > 1 else None
        if scale is not None:
            values = numpy_helper.to_array(scale)
            if np_.any(values <= 0):
                found.append(Finding("error", where, "scale <= 0", "recalibrate: a scale must be positive"))
            if values.size > 1 and node.input[0] not in weights:
                found.append(Finding("error", where, "per-channel scales on an activation: TensorRT takes them for "
                                     "weights only", "quantize activations per tensor"))
        if node.op_type == "DequantizeLinear" and node.input[0] not in weights:
            users = consumers.get(node.output[0], [])
            if users and not any(u.op_type in QDQ_FUSES_INTO for u in users):
                ops = sorted({u.op_type for u in users})
                found.append(Finding("warning", where, f"Q/DQ feeds {', '.join(ops)}, not Conv/MatMul/Gemm/residual "
                                     "Add: TensorRT will not fuse it and adds an int8<->float reformat",
                                     "keep that op out of quantization (op_types) or move the Q/DQ to the next "
                                     "weighted op's input"))
    return found


def _dynamic_axes(graph: Any, ranged: set[str]) -> list[Finding]:
    found = []
    init = _initializers(graph)
    for v in graph.input:
        if v.name in init:
            continue
        for k, dim in enumerate(v.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            name = dim.dim_param if dim.HasField("dim_param") else ""
            if name not in ranged:
                found.append(Finding("error", f"input {v.name}", f"dimension {k} ({name or 'unnamed'}) is dynamic "
                                     "but has no min/opt/max: an optimization profile must cover every input",
                                     f"name its range in the profile's tensorrt.shapes ({name or 'name the axis'}: "
                                     "{min: .., opt: .., max: ..}) or in the model contract's axes"))
    return found


def _dla(graph: Any, settings: TensorRTSettings) -> list[Finding]:
    fallback = settings.dla.gpu_fallback
    found = []
    has_qdq = any(n.op_type == "QuantizeLinear" for n in graph.node)
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    if not (has_qdq or half):
        found.append(Finding("warning" if fallback else "error", "model", "DLA runs FP16 and INT8 only; this graph is "
                             "FP32", "build the fp16 or int8 graph for DLA (the profile's precision)"))
    off_dla: dict[str, list[str]] = {}  # one finding per operator type, naming its first nodes
    for i, node in enumerate(graph.node):
        if node.op_type not in DLA_OPS and node.op_type not in ("Constant", "Shape", "Cast"):
            off_dla.setdefault(node.op_type, []).append(node.name or f"node #{i}")
    for op, nodes in sorted(off_dla.items()):
        shown = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
        found.append(Finding("warning" if fallback else "error", f"{shown} ({op})",
                             f"DLA cannot run {op}: " + ("it falls back to the GPU" if fallback
                                                         else "the build fails without GPU fallback"),
                             "accept the GPU fallback (listed in the engine's layer info) or keep DLA for the CNN "
                             "part only"))
    for v in graph.input:
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if any(d > DLA_MAX_DIM for d in dims[1:]):
            found.append(Finding("error", f"input {v.name}", f"a non-batch dimension exceeds DLA's {DLA_MAX_DIM}",
                                 "run this input's tower on the GPU (no DLA core)"))
    return found
