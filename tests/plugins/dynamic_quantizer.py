"""A quantizer in one file: ONNX Runtime dynamic int8 for MatMul/Gemm, with a config of its own."""
from __future__ import annotations

from typing import Literal

from onnxruntime.quantization import QuantType, quantize_dynamic

from edgemm.compress.quantizer import QUANTIZERS, OnnxQuantizer, QuantizeConfig


class DynamicConfig(QuantizeConfig):
    backend: Literal["ort-dynamic"]
    per_channel: bool = False


@QUANTIZERS.register
class DynamicQuantizer(OnnxQuantizer):
    name = "ort-dynamic"
    description = "ONNX Runtime dynamic int8, MatMul/Gemm only (test-only)"
    config = DynamicConfig
    requires = ("onnxruntime",)
    supports = ("int8", "cpu")

    def quantize(self, fp32, out, feeds, scheme, config: DynamicConfig, exclude):
        quantize_dynamic(str(fp32), str(out), per_channel=config.per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=exclude)
        return out
