"""onnxruntime.quantization: static Q/DQ calibrated on real samples with the target's scheme, or dynamic int8."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgemm.compress.quantizer import QUANTIZERS, Feeds, OnnxQuantizer, QuantizeConfig
from edgemm.export.profiles import QuantizationSettings
from edgemm.lazy import lazy_import

quantization = lazy_import("onnxruntime.quantization")
shape_inference = lazy_import("onnxruntime.quantization.shape_inference")

PREPROCESSED = "fp32.pre.onnx"


class OrtQuantizeConfig(QuantizeConfig):
    backend: Literal["ort"] = "ort"
    mode: Literal["static", "dynamic"] = "static"
    calibration_method: Literal["minmax", "percentile", "entropy"] | None = None  # default: the target profile's


def calibration_reader(feeds: Feeds):
    """An onnxruntime CalibrationDataReader over a list of feeds."""

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's recommended pre-pass (shape inference + optimisation) before quantizing."""
    if not out.exists():
        # Symbolic shape inference fails on dynamo-exported graphs (shared notes): skip it.
        shape_inference.quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


@QUANTIZERS.register
class OrtQuantizer(OnnxQuantizer):
    name = "ort"
    description = "onnxruntime.quantization: static Q/DQ (target's scheme, Conv/MatMul/Gemm) or dynamic int8"
    config = OrtQuantizeConfig
    requires = ("onnxruntime",)
    supports = ("int8", "cpu", "cuda", "tensorrt")

    def prepare(self, fp32: Path, work_dir: Path) -> Path:
        return preprocess(fp32, work_dir / PREPROCESSED)  # beside the output, never in the input's stage

    def scheme(self, config: OrtQuantizeConfig, ctx) -> QuantizationSettings:
        scheme = ctx.profile.quantization
        if config.calibration_method:
            scheme = scheme.model_copy(update={"calibration_method": config.calibration_method})
        return scheme

    def quantize(self, fp32, out, feeds, scheme, config: OrtQuantizeConfig, exclude):
        q = quantization
        source = self.prepare(fp32, out.parent)
        if config.mode == "dynamic":
            q.quantize_dynamic(str(source), str(out), per_channel=scheme.per_channel, weight_type=q.QuantType.QInt8,
                               op_types_to_quantize=[t for t in scheme.op_types if t in ("MatMul", "Gemm")],
                               nodes_to_exclude=exclude)
            return out
        method = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
                  "entropy": q.CalibrationMethod.Entropy}[scheme.calibration_method]
        q.quantize_static(
            str(source), str(out), calibration_reader(feeds), quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=scheme.op_types, per_channel=scheme.per_channel, nodes_to_exclude=exclude,
            calibrate_method=method,
            activation_type=q.QuantType.QUInt8 if scheme.activations == "uint8" else q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
            extra_options={"ActivationSymmetric": scheme.symmetric_activations, "WeightSymmetric": True,
                           "CalibPercentile": 99.99})
        return out
