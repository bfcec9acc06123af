"""The ``export`` stage, inserted by the planner wherever a PyTorch model must become ONNX (and at
the end): the ``onnx`` export target with the recipe's profile, validated against PyTorch."""
from __future__ import annotations

from typing import Literal

from edgemm.compress.stage import STAGES, Artifact, Context, Stage, StageConfig
from edgemm.export.target import EXPORT_TARGETS


class ExportConfig(StageConfig):
    stage: Literal["export"]


@STAGES.register
class ExportStage(Stage):
    name = "export"
    description = "ONNX export (dynamo, onnxslim) validated against the PyTorch model; inserted automatically"
    config = ExportConfig
    consumes, produces = "torch", "onnx"
    in_recipes = False
    gate_fix = "the ONNX export scores lower than PyTorch: check it with `edgemm validate`, try another opset"

    def run(self, config: ExportConfig | None, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        result = EXPORT_TARGETS.get("onnx").export(artifact.load(), ctx.stage_dir, ctx.profile)
        return Artifact("onnx", result.path), {"nodes": result.details["nodes_simplified"],
                                               "max_abs_error": max(c.max_abs_error for c in result.validation.checks)}
