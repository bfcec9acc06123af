"""Quantizer backends behind one interface, registered by name.

Each takes the fp32 ONNX file, calibration feeds (real samples, every modality)
and the nodes to keep in float, and writes a quantized ONNX file. The
accuracy-aware loop in ``fallback.py`` drives them.
"""
from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from edgemm.errors import BackendUnavailable
from edgemm.export.profiles import QuantizationSettings


class Quantizer(ABC):
    name: str
    requires: tuple[str, ...] = ()

    def unavailable_reason(self) -> str | None:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        return f"needs {missing} (pip install 'edgemm[{self.name}]')" if missing else None

    @abstractmethod
    def quantize(self, fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]], scheme: QuantizationSettings,
                 mode: str, exclude: list[str]) -> Path: ...


QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(cls: type[Quantizer]) -> type[Quantizer]:
    QUANTIZERS[cls.name] = cls()
    return cls


def get_quantizer(name: str) -> Quantizer:
    quantizer = QUANTIZERS[name]
    reason = quantizer.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"quantize backend {name!r} is not usable here: {reason}",
                                 "install it, or use backend: ort")
    return quantizer


def calibration_reader(feeds: list[dict[str, np.ndarray]]):
    """An onnxruntime CalibrationDataReader over a list of feeds."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


PREPROCESSED = "fp32.pre.onnx"


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's recommended pre-pass (shape inference + optimisation) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not out.exists():
        # Symbolic shape inference fails on dynamo-exported graphs (shared notes): skip it.
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


@register_quantizer
class OrtQuantizer(Quantizer):
    """onnxruntime.quantization: static Q/DQ with the target's scheme, or dynamic int8."""

    name = "ort"
    requires = ("onnxruntime",)

    def quantize(self, fp32, out, feeds, scheme, mode, exclude):
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

        source = preprocess(fp32, out.parent / PREPROCESSED)  # beside the output, never in the input's stage
        if mode == "dynamic":
            quantize_dynamic(str(source), str(out), per_channel=scheme.per_channel, weight_type=QuantType.QInt8,
                             op_types_to_quantize=[t for t in scheme.op_types if t in ("MatMul", "Gemm")],
                             nodes_to_exclude=exclude)
            return out
        reader = calibration_reader(feeds)
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[scheme.calibration_method]
        quantize_static(
            str(source), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=scheme.op_types,
            per_channel=scheme.per_channel, nodes_to_exclude=exclude, calibrate_method=method,
            activation_type=QuantType.QUInt8 if scheme.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": scheme.symmetric_activations, "WeightSymmetric": True,
                           "CalibPercentile": 99.99})
        return out


@register_quantizer
class ModelOptQuantizer(Quantizer):
    """NVIDIA ModelOpt's ONNX int8 PTQ: symmetric Q/DQ placed the way TensorRT fuses them."""

    name = "modelopt"
    requires = ("modelopt",)

    def quantize(self, fp32, out, feeds, scheme, mode, exclude):
        from modelopt.onnx.quantization import quantize

        calibration = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
        quantize(str(fp32), quantize_mode="int8", calibration_data=calibration, calibration_eps=["cpu"],
                 high_precision_dtype="fp32", nodes_to_exclude=exclude or None, output_path=str(out))
        return out


@register_quantizer
class Fp16Converter(Quantizer):
    """fp32 -> fp16 graph with fp32 inputs/outputs (onnxruntime.transformers.float16), for GPU targets."""

    name = "fp16"
    requires = ("onnxruntime",)

    def quantize(self, fp32, out, feeds, scheme, mode, exclude):
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True, node_block_list=exclude or None)
        onnx.save(model, str(out))
        return out
