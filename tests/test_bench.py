"""Latency statistics, the bench runner and its reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgemm.bench.latency import Latency, TimingSettings, measure
from edgemm.bench.guards import warnings_for
from edgemm.bench.regression import parse_fail_on, regressions
from edgemm.bench.report import plot, to_markdown, validate_report, write_report
from edgemm.bench.stats import percentile_ci
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
    assert report["schema_version"] == 2 and report["machine"]["threads"] == 1
    validate_report(report)
    assert report["machine"]["peak_gflops_fp32"] > 0
    assert report["machine"]["cpu"] and report["machine"]["versions"]["onnxruntime"]
    torch_result, ort_result = report["results"]
    assert (torch_result["backend"], ort_result["backend"]) == ("torch", "ort-cpu")
    assert torch_result["parameters"] == ort_result["parameters"] > 0
    for result in report["results"]:
        lat = {e["batch_size"]: e for e in result["latency"]}
        assert set(lat) == {1, 4}
        assert lat[4]["count"] == len(lat[4]["samples_ms"]) >= FAST.min_iterations
        assert 0 < lat[1]["p50_ms"] <= lat[1]["p90_ms"] <= lat[1]["p99_ms"]
    for result in report["results"]:
        assert result["flops_per_item"] > 0 and 0 < result["efficiency"] < 1
    json_path, md_path = write_report(report, tmp_path)
    assert (tmp_path / "pareto.png").exists() is False  # no accuracy without a dataset: no Pareto chart
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json_path.read_text())["results"][0]["label"] == torch_result["label"]
    markdown = md_path.read_text()
    assert "| tiny-image-text | torch |" in markdown and "| tiny-image-text (" in markdown
    assert "Untrained (random) weights" in markdown  # honest about meaningless accuracy


def test_bench_reports_accuracy_on_the_eval_split():
    report = run_bench(["demo-text-only"], batch_sizes=(2,), threads=1, splits=("val",), timing=FAST, rounds=1)
    acc = report["results"][0]["accuracy"]["val"]
    assert 0.0 <= acc <= 1.0
    md = to_markdown(report)
    assert "acc val" in md and f"{100 * acc:.1f} %" in md and "p50 95 % CI" in md


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


def test_percentile_confidence_interval_on_known_samples():
    assert percentile_ci(list(range(1, 101)), 50) == (40.0, 61.0)  # ranks 40 and 61: the textbook n=100 interval
    rng = np.random.default_rng(0)
    covered = sum(lo <= 1.0 <= hi for lo, hi in (percentile_ci(rng.lognormal(0, 0.5, 150), 50) for _ in range(400)))
    assert 0.92 <= covered / 400 <= 0.99  # a 95 % interval for the median of lognormal(0, .5), which is 1.0


def test_noise_flag_follows_the_spread():
    tight = Latency(1, list(np.random.default_rng(1).normal(10, 0.05, 200)))
    wide = Latency(1, list(np.random.default_rng(1).lognormal(2, 0.6, 200)))
    assert not tight.noisy() and wide.noisy()
    assert any("noisy measurement" in w for w in warnings_for([_result("a", [wide], int8=False, params=10)]))


def _result(label, latencies, int8, params, backend="ort-cpu", accuracy=None):
    return {"label": label, "model": label, "backend": backend, "int8": int8, "parameters": params,
            "accuracy": accuracy or {}, "trained": True, "size_bytes": 1, "memory": {}, "fidelity": {},
            "flops_per_item": None, "efficiency": None, "latency": [lat.to_dict() for lat in latencies]}


def test_guards_warn_when_int8_or_pruned_is_not_faster():
    fast, slow = Latency(1, [1.0] * 60), Latency(1, [2.0] * 60)
    found = warnings_for([_result("fp32", [fast], int8=False, params=100), _result("int8", [slow], int8=True, params=100)])
    assert any(w.startswith("int8 not faster: int8") for w in found)
    found = warnings_for([_result("big", [fast], int8=False, params=100), _result("pruned", [slow], int8=False, params=50)])
    assert any(w.startswith("pruned model not faster: pruned") for w in found)
    assert not warnings_for([_result("big", [slow], int8=False, params=100), _result("pruned", [fast], int8=False, params=50)])


def test_gate_catches_a_planted_regression():
    base = {"results": [_result("m on ort-cpu", [Latency(1, [1.0] * 60)], False, 10, accuracy={"test": 0.90})]}
    same = {"results": [_result("m on ort-cpu", [Latency(1, [1.05] * 60)], False, 10, accuracy={"test": 0.895})]}
    worse = {"results": [_result("m on ort-cpu", [Latency(1, [1.3] * 60)], False, 10, accuracy={"test": 0.85})]}
    limits = parse_fail_on("p50=10%,accuracy=1")
    assert limits == {"p50_ms": 0.10, "accuracy": 1.0}
    assert regressions(base, same, limits) == []
    found = regressions(base, worse, limits)
    assert len(found) == 2 and "p50_ms 1.300 ms vs 1.000 ms (+30.0 % > 10 %)" in found[1]
    with pytest.raises(EdgemmError, match="cannot read 'p50=fast'"):
        parse_fail_on("p50=fast")


def test_schema_rejects_a_broken_report(tiny_onnx):
    import jsonschema

    report = run_bench([str(tiny_onnx)], batch_sizes=(1,), threads=1, splits=(), timing=FAST, rounds=1)
    validate_report(report)
    del report["results"][0]["latency"][0]["samples_ms"]
    with pytest.raises(jsonschema.ValidationError, match="samples_ms"):
        validate_report(report)


def test_pareto_plot_of_variants(tmp_path):
    report = run_bench(["demo-text-only"], batch_sizes=(1,), threads=1, splits=("val",), timing=FAST, rounds=1)
    written = plot([report], tmp_path)
    assert [p.name for p in written] == ["pareto.png", "latency.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000 for p in written)


def test_fidelity_to_the_reference_is_reported(tmp_path):
    from edgemm.export.onnx import export_onnx
    from edgemm.export.profiles import load_profile
    from edgemm.models.registry import resolve_model

    onnx_path = export_onnx(resolve_model("demo-text-only"), tmp_path, load_profile("x86-cpu")).onnx_path
    report = run_bench(["demo-text-only", str(onnx_path)], batch_sizes=(1,), threads=1, splits=("val",), timing=FAST,
                       rounds=1)
    assert report["results"][0]["fidelity"] == {}
    fid = report["results"][1]["fidelity"]
    assert fid["top1_agreement_val"] == 1.0 and fid["cosine_val"] > 0.9999


def test_torch_compile_backend_matches_eager():
    from edgemm.bench.backends import get_backend
    from edgemm.models.registry import resolve_model

    from .conftest import FACTORY as factory

    model = resolve_model(factory)
    feed = model.spec.example_inputs({"batch": 3, "seq": 7})
    eager = get_backend("torch").load(model, threads=1).run(feed)["scores"]
    session = get_backend("torch-compile").load(model, threads=1)
    np.testing.assert_allclose(session.run(feed)["scores"], eager, atol=1e-5)
    assert session.backend == "torch-compile"


def test_breakdown_times_each_modality_tower_and_fusion():
    report = run_bench(["demo-fusion"], batch_sizes=(1,), threads=1, splits=(), timing=FAST, rounds=1, breakdown=True)
    validate_report(report)
    stages = report["results"][0]["breakdown"]["stages"]
    assert set(stages) == {"preprocess:image", "preprocess:audio", "preprocess:text", "tower:image", "tower:audio",
                           "tower:text", "fusion head", "end to end", "model only"}
    assert all(s["p50_ms"] > 0 for s in stages.values())
    assert "Where the time goes: demo-fusion" in to_markdown(report)


@pytest.mark.gpu
def test_cuda_backend_times_with_events():
    report = run_bench(["demo-fusion"], backends=["torch-cuda"], batch_sizes=(1, 16), threads=1, splits=("val",),
                       timing=FAST, rounds=1)
    result = report["results"][0]
    assert report["machine"]["gpu"] and result["memory"]["gpu_peak_allocated_mb"] > 0
    assert 0 < result["memory"]["device_forward_p50_ms"] <= result["latency"][0]["p99_ms"]


def test_cuda_backend_is_refused_without_a_gpu():
    import torch

    from edgemm.bench.backends import get_backend
    from edgemm.errors import BackendUnavailable

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        get_backend("torch-cuda")
