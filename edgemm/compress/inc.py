"""Intel Neural Compressor 3.x static int8 (PT2E) with its ``autotune`` under edgemm's accuracy gate.

The x86 CPU path: torch.export -> prepare -> calibrate on real samples -> convert,
tuned over INC's int8 config set (symmetric/asymmetric activations, KL/minmax);
the chosen model is exported to ONNX Q/DQ with the dynamo exporter (shared notes:
the legacy exporter fails on it). INC's autotune returns its best model even when
none meets the tolerance, so the caller checks the gate itself.
"""
from __future__ import annotations

import importlib.util
from typing import Callable

import numpy as np

from edgemm.errors import BackendUnavailable
from edgemm.models.registry import LoadedModel


def available() -> str | None:
    return None if importlib.util.find_spec("neural_compressor") else "needs neural-compressor-pt (pip install 'edgemm[inc]')"


def quantize_inc(model: LoadedModel, feeds: list[dict[str, np.ndarray]], accuracy: Callable[[object], float],
                 tolerable_relative_loss: float, max_trials: int):
    """Return INC's tuned int8 GraphModule (PT2E) for ``model``."""
    reason = available()
    if reason:
        raise BackendUnavailable(f"quantize backend 'inc' is not usable here: {reason}", "or use backend: ort")
    import torch
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune

    from edgemm.export.onnx import dynamic_shapes, export_sizes
    from edgemm.train import to_tensors

    spec = model.spec
    torch.backends.mha.set_fastpath_enabled(False)  # else attention is one opaque op to INC
    example = tuple(to_tensors(spec, spec.example_inputs(export_sizes(spec))))
    exported = export(model.module.eval(), example, dynamic_shapes=dynamic_shapes(spec, model.module))

    def calibrate(graph) -> None:
        with torch.no_grad():
            for feed in feeds:
                graph(*to_tensors(spec, feed))

    tuning = TuningConfig(config_set=[StaticQuantConfig.get_config_set_for_tuning()],
                          tolerable_loss=tolerable_relative_loss, max_trials=max_trials)
    return autotune(exported, tuning, eval_fn=accuracy, run_fn=calibrate, example_inputs=example)
