"""fp32 -> fp16 graph with fp32 inputs/outputs (onnxruntime.transformers.float16), for GPU targets."""
from __future__ import annotations

from typing import Literal

from edgemm.compress.quantizer import QUANTIZERS, OnnxQuantizer, QuantizeConfig
from edgemm.lazy import lazy_import

onnx = lazy_import("onnx")
float16 = lazy_import("onnxruntime.transformers.float16")


class Fp16Config(QuantizeConfig):
    backend: Literal["fp16"]


@QUANTIZERS.register
class Fp16Converter(OnnxQuantizer):
    name = "fp16"
    description = "half-precision graph (fp32 inputs/outputs) for GPU targets; no calibration needed"
    config = Fp16Config
    requires = ("onnxruntime",)
    supports = ("fp16", "cuda", "tensorrt")

    def quantize(self, fp32, out, feeds, scheme, config, exclude):
        model = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True,
                                                 node_block_list=exclude or None)
        onnx.save(model, str(out))
        return out
