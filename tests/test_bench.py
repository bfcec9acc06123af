"""Latency statistics, the bench runner and its reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgemm.bench.latency import Latency, TimingSettings, measure
from edgemm.bench.report import to_markdown, write_report
from edgemm.bench.runner import run_bench
from edgemm.errors import EdgemmError

from .conftest import FACTORY

FAST = TimingSettings(warmup=2, min_iterations=10, min_seconds=0.0)


def test_latency_statistics_on_known_samples():
    lat = Latency(batch_size=4, samples_ms=[float(i) for i in range(1, 101)])
    assert lat.p50 == pytest.approx(50.5)
    assert lat.p90 == pytest.approx(90.1)
    assert lat.p99 == pytest.approx(99.01)
    assert lat.mean == pytest.approx(50.5)
    assert lat.throughput == pytest.approx(4 * 1000 / 50.5)
    assert lat.to_dict()["samples_ms"][:3] == [1.0, 2.0, 3.0]


def test_measure_honours_warmup_count_and_duration():
    calls = []
    lat = measure(lambda: calls.append(1), 1, TimingSettings(warmup=3, min_iterations=20, min_seconds=0.0))
    assert lat.count == 20 and len(calls) == 23
    lat = measure(lambda: None, 1, TimingSettings(warmup=0, min_iterations=1, min_seconds=0.05))
    assert lat.count > 1  # min_iterations=1 was met at once; it kept going for 50 ms


def test_bench_compares_torch_and_onnx_on_the_same_model(tiny_onnx, tmp_path):
    report = run_bench([FACTORY, str(tiny_onnx)], batch_sizes=(1, 4), threads=1, splits=(), timing=FAST, rounds=2)
    assert report["schema_version"] == 1 and report["machine"]["threads"] == 1
    assert report["machine"]["cpu"] and report["machine"]["versions"]["onnxruntime"]
    torch_result, ort_result = report["results"]
    assert (torch_result["backend"], ort_result["backend"]) == ("torch", "ort-cpu")
    assert torch_result["parameters"] == ort_result["parameters"] > 0
    for result in report["results"]:
        lat = {e["batch_size"]: e for e in result["latency"]}
        assert set(lat) == {1, 4}
        assert lat[4]["count"] == len(lat[4]["samples_ms"]) >= FAST.min_iterations
        assert 0 < lat[1]["p50_ms"] <= lat[1]["p90_ms"] <= lat[1]["p99_ms"]
    json_path, md_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["results"][0]["label"] == torch_result["label"]
    markdown = md_path.read_text()
    assert "| tiny-image-text | torch |" in markdown and "| tiny-image-text | ort-cpu |" in markdown
    assert "Untrained (random) weights" in markdown  # honest about meaningless accuracy


def test_bench_reports_accuracy_on_the_eval_split():
    report = run_bench(["demo-text-only"], batch_sizes=(2,), threads=1, splits=("val",), timing=FAST, rounds=1)
    acc = report["results"][0]["accuracy"]["val"]
    assert 0.0 <= acc <= 1.0
    md = to_markdown(report)
    assert "acc val" in md and f"{100 * acc:.1f} %" in md


def test_backend_that_cannot_run_the_artifact_is_refused():
    with pytest.raises(EdgemmError, match="cannot run"):
        run_bench([FACTORY], backends=["ort-cpu"], batch_sizes=(1,), splits=(), timing=FAST)
    with pytest.raises(EdgemmError, match="unknown backend"):
        run_bench([FACTORY], backends=["tpu"], batch_sizes=(1,), splits=(), timing=FAST)


def test_latency_inputs_are_real_eval_samples():
    from edgemm.bench.runner import latency_inputs
    from edgemm.data.datasets import load_split
    from edgemm.models.registry import resolve_model

    feed = latency_inputs(resolve_model("demo-fusion"), 3, "test")
    assert np.array_equal(feed["audio"], load_split("edgemm-digits", "test").inputs["audio"][:3])
