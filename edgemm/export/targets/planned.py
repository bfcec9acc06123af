"""Targets users ask for that this version does not build yet: listed by ``edgemm list targets``,
accepted as a profile's target (the ``tensorrt-gpu`` profile already drives TensorRT-style int8
Q/DQ), and refused by ``edgemm export`` with the reason. A real module replaces each entry."""
from __future__ import annotations

from edgemm.errors import BackendUnavailable
from edgemm.export.target import EXPORT_TARGETS, ExportTarget

WHY = "not available in this version of edgemm"


class PlannedTarget(ExportTarget):
    consumes = "onnx"

    def __init__(self, name: str, produces: str, description: str):
        self.name, self.produces, self.description = name, produces, description

    def unavailable_reason(self) -> str | None:
        return WHY

    def unavailable_fix(self, usable: list[str]) -> str:
        return "use --target onnx; a TensorRT engine is built from that ONNX file (trtexec --onnx=model.onnx)"

    def export(self, model, out_dir, profile):
        raise BackendUnavailable(f"export target {self.name!r} is {WHY}")


EXPORT_TARGETS.register(PlannedTarget("tensorrt", "engine", "TensorRT engine built from the ONNX export"))
EXPORT_TARGETS.register(PlannedTarget("torch-tensorrt", "torch", "torch-tensorrt compiled module"))
