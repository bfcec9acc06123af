"""Each kind of component is one new file: the test-only ones in tests/plugins/ register themselves on
import, and edgemm's schemas, listings and commands take them up with no other change."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edgemm import api
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.cli.main import app
from edgemm.compress.quantizer import QUANTIZERS
from edgemm.compress.recipe import recipe_model
from edgemm.data.datasets import DATASETS, load_split
from edgemm.errors import ConfigError
from edgemm.export.target import EXPORT_TARGETS
from edgemm.models.registry import ZOO, LoadedModel, resolve_model, save_model
from edgemm.runtime import BACKENDS, accuracy, load_session

from .conftest import FACTORY

FAST = TimingSettings(warmup=2, min_iterations=6, min_seconds=0.0, rounds=2)
PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugin():
    """Import a plugin module (registering its component); unregister it after the test."""
    added = []

    def load(module: str, registry, name: str):
        qualified = f"tests.plugins.{module}"
        importlib.reload(sys.modules[qualified]) if qualified in sys.modules else importlib.import_module(qualified)
        added.append((registry, name))
        assert name in registry
        return registry.get(name)
    yield load
    for registry, name in added:
        registry.unregister(name)


def test_a_quantizer_is_one_file(plugin, tmp_path):
    plugin("dynamic_quantizer", QUANTIZERS, "ort-dynamic")
    assert "ort-dynamic" in [q["name"] for q in api.components("quantizers")["quantizers"]]
    entry = {"stage": "quantize", "backend": "ort-dynamic", "per_channel": True, "calibration_samples": 64}
    recipe = recipe_model().model_validate({"name": "dyn", "gates": {"max_accuracy_drop": 100}, "stages": [entry]})
    assert recipe.stages[0].per_channel is True  # its own key, validated by its own config class
    with pytest.raises(ValueError, match="quantize.ort-dynamic.mode"):  # ORT's keys are not its keys
        recipe_model().model_validate({"name": "x", "stages": [{**entry, "mode": "static"}]})
    result = api.compress("demo-text-only", recipe, tmp_path, batch_sizes=(1,), timing=FAST, log=lambda _m: None)
    ops = {n.op_type for n in onnx.load(str(result.final)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops and result.stages[-1]["backend"] == "ort-dynamic"


def test_a_bench_backend_is_one_file_and_device_times_cover_only_timed_calls(plugin, trained_onnx):
    """The session's own (device) times cover the timed calls of each batch size: not warm-up, not accuracy."""
    plugin("selftimed_backend", BACKENDS, "ort-cpu-selftimed")
    timing = TimingSettings(warmup=3, min_iterations=8, min_seconds=0.0, rounds=2)
    report, _ = api.bench([str(trained_onnx)], backends=["ort-cpu-selftimed"], batch_sizes=(1, 4), threads=1,
                          splits=("val",), timing=timing)
    result = report.results[0]
    assert result.backend == "ort-cpu-selftimed" and result.accuracy["val"] > 0.2
    for lat in result.latency:
        assert lat.count == len(lat.device_samples_ms) == 8  # 2 rounds x 4 timed calls; 2 x 3 warm-up left out
        assert lat.warmup == 6 and 0 < lat.device_p50_ms <= lat.p99_ms
    assert result.memory["device_peak_mb"] > 0
    assert "device p50 ms" in to_markdown(report)


def test_an_export_target_is_one_file_plus_a_profile(plugin, tmp_path):
    plugin("external_data_target", EXPORT_TARGETS, "onnx-external-data")
    result = api.export(FACTORY, target="onnx-external-data", profile=str(PLUGINS / "external-data.yaml"),
                        out_dir=tmp_path)
    assert result.validation.passed
    assert (tmp_path / "model.onnx.data").stat().st_size >= 3200  # the 50 x 16 float embedding at least
    session = load_session(resolve_model(str(result.path)), threads=1)
    assert session.artifact_bytes == sum(p.stat().st_size for p in tmp_path.glob("model.onnx*"))
    (tmp_path / "bad.yaml").write_text("name: b\ntarget: onnx-external-data\nonnx-external-data: {size: 1}\n")
    with pytest.raises(ConfigError, match="onnx-external-data.size: Extra inputs"):
        api.export(FACTORY, target="onnx-external-data", profile=str(tmp_path / "bad.yaml"), out_dir=tmp_path / "b")


def test_a_zoo_model_is_one_file(plugin):
    plugin("late_fusion_zoo", ZOO, "demo-late-fusion")
    model = resolve_model("demo-late-fusion")
    out = load_session(model).run(model.spec.example_inputs({"batch": 3, "time": 40, "seq": 5}))
    assert out["logits"].shape == (3, 10)
    listing = CliRunner().invoke(app, ["zoo"])
    assert "demo-late-fusion" in listing.output


def test_a_dataset_is_one_file(plugin, tmp_path):
    plugin("seeded_dataset", DATASETS, "seeded-random")
    assert "seeded-random" in [d["name"] for d in api.components("datasets")["datasets"]]
    model = resolve_model(FACTORY)
    split = load_split("seeded-random", "test", model.spec)
    predicted = load_session(model).run(split.inputs)["scores"].argmax(1)
    report, _ = api.bench([FACTORY], batch_sizes=(2,), threads=1, splits=("test",), timing=FAST,
                          dataset="seeded-random")
    assert report.results[0].accuracy == {"test": pytest.approx(float((predicted == 0).mean()))}