"""NVIDIA ModelOpt's ONNX int8 PTQ: symmetric Q/DQ placed the way TensorRT fuses them."""
from __future__ import annotations

from typing import Literal

import numpy as np

from edgemm.compress.quantizer import QUANTIZERS, OnnxQuantizer, QuantizeConfig
from edgemm.lazy import lazy_import

modelopt_onnx = lazy_import("modelopt.onnx.quantization", "pip install 'edgemm[modelopt]'")


class ModelOptQuantizeConfig(QuantizeConfig):
    backend: Literal["modelopt"]


@QUANTIZERS.register
class ModelOptQuantizer(OnnxQuantizer):
    name = "modelopt"
    description = "NVIDIA ModelOpt ONNX int8 PTQ (symmetric Q/DQ placed for TensorRT fusions)"
    config = ModelOptQuantizeConfig
    requires = ("modelopt",)
    extra = "modelopt"
    supports = ("int8", "tensorrt")

    def quantize(self, fp32, out, feeds, scheme, config, exclude):
        calibration = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
        modelopt_onnx.quantize(str(fp32), quantize_mode="int8", calibration_data=calibration, calibration_eps=["cpu"],
                               high_precision_dtype="fp32", nodes_to_exclude=exclude or None, output_path=str(out))
        return out
