"""Export targets: what turns a model into a deployable artifact, registered by name.

A target declares the artifact kind it consumes and produces, its optional libraries and
its config class, which is also its section in an export profile (``onnx:`` for the
``onnx`` target). ``edgemm export --target NAME`` and the profile schema read this registry.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemm.export.profiles import ExportProfile
from edgemm.export.registry import EXPORT_TARGETS
from edgemm.export.validate import ValidationReport
from edgemm.models.registry import LoadedModel
from edgemm.registry import Component


@dataclass
class ExportResult:
    path: Path  # the deployable artifact
    validation: ValidationReport | None
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # target-specific figures (node counts...)


class ExportTarget(Component):
    consumes = "torch"

    @abstractmethod
    def export(self, model: LoadedModel, out_dir: Path, profile: ExportProfile) -> ExportResult:
        """Write the artifact, its validation and a manifest into ``out_dir``; raise when validation fails."""


__all__ = ["EXPORT_TARGETS", "ExportResult", "ExportTarget"]  # a target module imports all it needs from here
