"""Intel Neural Compressor 3.x static int8 (PT2E) with its ``autotune`` under edgemm's accuracy gate.

The x86 CPU path: torch.export -> prepare -> calibrate on real samples -> convert,
tuned over INC's int8 config set (symmetric/asymmetric activations, KL/minmax);
the chosen model is exported to ONNX Q/DQ with the dynamo exporter (shared notes:
the legacy exporter fails on it). INC's autotune returns its best model even when
none meets the tolerance, so the quantize stage checks the gate itself.
"""
from __future__ import annotations

from typing import Literal

from edgemm.compress.quantizer import QUANTIZERS, QuantizeConfig, TorchQuantizer
from edgemm.export.targets.onnx import dynamic_shapes, export_sizes
from edgemm.lazy import lazy_import
from edgemm.runtime.convert import to_tensors

torch = lazy_import("torch")
inc_export = lazy_import("neural_compressor.torch.export", "pip install 'edgemm[inc]'")
inc_quantization = lazy_import("neural_compressor.torch.quantization", "pip install 'edgemm[inc]'")


class IncQuantizeConfig(QuantizeConfig):
    backend: Literal["inc"]


@QUANTIZERS.register
class IncQuantizer(TorchQuantizer):
    name = "inc"
    description = "Intel Neural Compressor 3.x static int8 (PT2E) tuned by its autotune, exported to ONNX Q/DQ"
    config = IncQuantizeConfig
    requires = ("neural_compressor",)
    extra = "inc"
    supports = ("int8", "cpu")

    def tune(self, model, feeds, evaluate, config, tolerable_relative_loss):
        spec = model.spec
        example = tuple(to_tensors(spec, spec.example_inputs(export_sizes(spec))))
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # else attention is one opaque op to INC
        try:
            exported = inc_export.export(model.module.eval(), example,
                                         dynamic_shapes=dynamic_shapes(spec, model.module))
        finally:  # a process-wide switch: later torch timings must run as users run them
            torch.backends.mha.set_fastpath_enabled(fastpath)

        def calibrate(graph) -> None:
            with torch.no_grad():
                for feed in feeds:
                    graph(*to_tensors(spec, feed))

        q = inc_quantization
        tuning = q.TuningConfig(config_set=[q.StaticQuantConfig.get_config_set_for_tuning()],
                                tolerable_loss=tolerable_relative_loss, max_trials=config.fallback.max_tries + 1)
        return q.autotune(exported, tuning, eval_fn=evaluate, run_fn=calibrate, example_inputs=example)
