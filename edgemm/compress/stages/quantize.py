"""The ``quantize`` stage: hands the model to the quantizer named by ``backend`` (``compress/quantizers/``).

Its recipe entry is validated by that quantizer's own config class; what it consumes (the
ONNX export, or the PyTorch model for torch-side quantizers such as INC) is the quantizer's.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from edgemm.compress.quantizer import QUANTIZERS, QuantizeConfig
from edgemm.compress.stage import STAGES, Artifact, Context, Stage
from edgemm.config import UNKNOWN_NAME

DEFAULT_BACKEND = "ort"


def _backend_of(entry: Any) -> str | None:
    return entry.get("backend", DEFAULT_BACKEND) if isinstance(entry, dict) else getattr(entry, "backend", None)


@STAGES.register
class QuantizeStage(Stage):
    name = "quantize"
    description = "int8/fp16 by the quantizer named in `backend`, with accuracy-aware fallback"
    config = QuantizeConfig
    produces = "onnx"
    uses_gates = True  # the fallback retreats until the gate's accuracy holds
    gate_fix = "keep sensitive towers in float (keep_float), raise fallback.max_tries, or try another backend"

    def config_type(self) -> Any:
        members = tuple(Annotated[q.config, Tag(q.name)] for q in QUANTIZERS)
        return Annotated[Union[members], Discriminator(  # noqa: UP007 (a runtime-built union)
            _backend_of, custom_error_type=UNKNOWN_NAME + "backend",
            custom_error_message=f"unknown quantize backend; registered: {', '.join(QUANTIZERS.names())} "
                                 "(`edgemm list quantizers`)")]

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "consumes": "by backend (`edgemm list quantizers`)"}

    def consumes_for(self, config: QuantizeConfig | None) -> str:
        return QUANTIZERS.get(config.backend if config else DEFAULT_BACKEND, usable=False).consumes

    def check_usable(self, config: QuantizeConfig | None) -> None:
        QUANTIZERS.get(config.backend if config else DEFAULT_BACKEND)

    def splits_read(self, config: QuantizeConfig | None) -> list[str]:
        return [config.calibration_split] if config else []

    def run(self, config: QuantizeConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        return QUANTIZERS.get(config.backend).run(config, artifact, ctx)
