"""ONNX export: dynamic axes at unseen sizes, validation that catches real mismatches."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgemm.artifacts import read_manifest, sha256_file
from edgemm.errors import ValidationFailed
from edgemm.export.profiles import load_profile
from edgemm.export.targets.onnx import REJECTED_FILE, export_onnx
from edgemm.export.validate import ValidationSettings, compare
from edgemm.models.registry import LoadedModel, resolve_model
from edgemm.runtime import load_session

from .conftest import FACTORY


def _tamper(src, dst, scale=1.05):
    """Scale the largest weight tensor: a plausible corruption that still loads."""
    proto = onnx.load(str(src))
    init = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
    onnx.save(proto, str(dst))
    return dst


def test_export_writes_model_validation_and_manifest(tiny_onnx):
    out = tiny_onnx.parent
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["kind"] == "export"
    assert manifest["artifacts"]["model.onnx"] == sha256_file(tiny_onnx)
    assert "torch" in manifest["versions"] and "onnxruntime" in manifest["versions"]
    report = json.loads((out / "validation.json").read_text())
    assert report["passed"] and report["checks"][0]["max_abs_error"] < 1e-4
    graph = onnx.load(str(tiny_onnx)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"pixels": ["batch", 3, 16, 16], "tokens": ["batch", "seq"]}


@pytest.mark.parametrize("sizes", [{"batch": 1, "seq": 1}, {"batch": 7, "seq": 13}, {"batch": 32, "seq": 20}])
def test_onnx_matches_torch_at_sizes_not_seen_at_export(tiny_onnx, sizes):
    torch_model, onnx_model = resolve_model(FACTORY), resolve_model(str(tiny_onnx))
    feed = torch_model.spec.example_inputs(sizes, seed=5)
    ref = load_session(torch_model, "torch").run(feed)["scores"]
    got = load_session(onnx_model, "ort-cpu").run(feed)["scores"]
    assert got.shape == (sizes["batch"], 5)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_validation_catches_a_tampered_weight(tiny_onnx, tmp_path):
    tampered = _tamper(tiny_onnx, tmp_path / "tampered.onnx")
    reference = resolve_model(FACTORY)
    sessions = [load_session(m, b) for b, m in (("torch", reference), ("ort-cpu", resolve_model(str(tampered))))]
    report = compare(reference.spec, sessions[0], sessions[1], ValidationSettings())
    assert not report.passed
    assert "output 'scores'" in report.failure_text() and "max abs error" in report.failure_text()
    untouched = load_session(resolve_model(str(tiny_onnx)), "ort-cpu")
    assert compare(reference.spec, sessions[0], untouched, ValidationSettings()).passed


def test_failed_validation_leaves_no_complete_looking_artifact(tmp_path, monkeypatch):
    """Plant a mismatch between export and validation: export must refuse and say by how much."""
    import edgemm.export.targets.onnx as exporter

    real_save = onnx.save_model

    def save_then_tamper(proto, path):
        real_save(proto, path)
        _tamper(path, path, scale=1.5)

    monkeypatch.setattr(onnx, "save_model", save_then_tamper)
    with pytest.raises(ValidationFailed, match="output 'scores'.*max abs error"):
        exporter.export_onnx(resolve_model(FACTORY), tmp_path, load_profile("x86-cpu"))
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "manifest.json").exists()
    assert (tmp_path / REJECTED_FILE).exists()
    assert not json.loads((tmp_path / "validation.json").read_text())["passed"]


@pytest.mark.slow
def test_demo_model_exports_with_every_modality_dynamic(tmp_path):
    """The real three-tower model: batch, audio time and text length all stay dynamic."""
    model = resolve_model("demo-fusion")
    result = export_onnx(model, tmp_path, load_profile("x86-cpu"))
    assert result.validation.passed
    onnx_model = LoadedModel(model.spec, "x", "onnx", onnx_path=result.path)
    feed = model.spec.example_inputs({"batch": 5, "time": 173, "seq": 11}, seed=9)
    ref = load_session(model, "torch").run(feed)["logits"]
    got = load_session(onnx_model, "ort-cpu").run(feed)["logits"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
