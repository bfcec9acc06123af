"""An export target in one file (plus a profile): ONNX with its weights in a separate
``model.onnx.data`` file, as models over protobuf's 2 GB limit need; validated like ``onnx``."""
from __future__ import annotations

import time
from pathlib import Path

import onnx
from pydantic import Field

from edgemm.artifacts import write_json
from edgemm.config import Strict
from edgemm.errors import ValidationFailed
from edgemm.export.target import EXPORT_TARGETS, ExportResult, ExportTarget
from edgemm.export.targets.onnx import to_onnx_proto
from edgemm.export.validate import validate
from edgemm.models.registry import SPEC_METADATA_KEY, LoadedModel


class ExternalDataSettings(Strict):
    size_threshold: int = Field(1024, ge=0, description="tensors of at least this many bytes go to the .data file")


@EXPORT_TARGETS.register
class ExternalDataTarget(ExportTarget):
    name = "onnx-external-data"
    description = "ONNX with weights in model.onnx.data (test-only)"
    config = ExternalDataSettings
    produces = "onnx"

    def export(self, model, out_dir: Path, profile) -> ExportResult:
        start = time.perf_counter()
        settings: ExternalDataSettings = profile.section(self.name)
        proto = to_onnx_proto(model, profile.section("onnx"))
        onnx.helper.set_model_props(proto, {SPEC_METADATA_KEY: model.spec.to_json()})
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.onnx"
        onnx.save_model(proto, str(path), save_as_external_data=True, location="model.onnx.data",
                        size_threshold=settings.size_threshold)
        report = validate(model, LoadedModel(model.spec, str(path), "onnx", onnx_path=path), profile.validation)
        write_json(out_dir / "validation.json", report.to_dict())
        if not report.passed:
            raise ValidationFailed(f"exported ONNX disagrees with PyTorch: {report.failure_text()}")
        return ExportResult(path, report, time.perf_counter() - start)
