"""The ``quantize`` stage: hands the model to the quantizer named by ``backend`` (``compress/quantizers/``).

Its recipe entry is validated by that quantizer's own config class; what it consumes (the
ONNX export, or the PyTorch model for torch-side quantizers such as INC) is the quantizer's.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from edgemm.compress.quantizer import QUANTIZERS, QuantizeConfig
from edgemm.compress.stage import STAGES, Artifact, Context, Stage

DEFAULT_BACKEND = "ort"


def _backend_of(entry: Any) -> str | None:
    return entry.get("backend", DEFAULT_BACKEND) if isinstance(entry, dict) else getattr(entry, "backend", None)


@STAGES.register
class QuantizeStage(Stage):
    name = "quantize"
    description = "int8/fp16 by the quantizer named in `backend`, with accuracy-aware fallback"
    config = QuantizeConfig
    produces = "onnx"

    def config_type(self) -> Any:
        members = tuple(Annotated[q.config, Tag(q.name)] for q in QUANTIZERS)
        return Annotated[Union[members], Discriminator(_backend_of)]  # noqa: UP007 (a runtime-built union)

    def consumes_for(self, config: QuantizeConfig | None) -> str:
        return QUANTIZERS.get(config.backend if config else DEFAULT_BACKEND, usable=False).consumes

    def run(self, config: QuantizeConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        return QUANTIZERS.get(config.backend).run(config, artifact, ctx)
