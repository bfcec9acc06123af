"""Latency statistics, the bench runner, the typed report and its renderings, the regression gate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemm import api
from edgemm.bench.guards import warnings_for
from edgemm.bench.latency import Latency, TimingSettings, measure
from edgemm.bench.regression import compare, gate, pair_results, parse_fail_on
from edgemm.bench.report import plot, to_markdown, validate_report, write_report
from edgemm.bench.runner import latency_inputs, run_bench
from edgemm.bench.schema import SCHEMA_FILE, BenchReport, BenchSettings, Machine, Result, json_schema
from edgemm.bench.stats import percentile_ci
from edgemm.data.datasets import load_split
from edgemm.errors import ConfigError, EdgemmError, InputError
from edgemm.models.registry import resolve_model
from edgemm.runtime import load_session

from .conftest import FACTORY

FAST = TimingSettings(warmup=2, min_iterations=10, min_seconds=0.0, rounds=2)
ONE_ROUND = FAST.model_copy(update={"rounds": 1})
COMMITTED_V2 = Path(__file__).parents[1] / "benchmarks/results/intel-r-xeon-r-processor/1-thread/report.json"


def test_latency_statistics_on_known_samples():
    lat = Latency(batch_size=4, samples_ms=[float(i) for i in range(1, 101)])
    assert lat.p50_ms == pytest.approx(50.5) and lat.p90_ms == pytest.approx(90.1) and lat.p99_ms == pytest.approx(99.01)
    assert lat.mean_ms == pytest.approx(50.5) and lat.throughput_per_s == pytest.approx(4 * 1000 / 50.5)
    dumped = lat.model_dump(mode="json")
    assert dumped["samples_ms"][:3] == [1.0, 2.0, 3.0] and dumped["p50_ms"] == pytest.approx(50.5)
    dumped["p50_ms"] = 999.0  # statistics in a file are recomputed from the raw samples, never trusted
    assert Latency.model_validate(dumped).p50_ms == pytest.approx(50.5)


def test_measure_honours_warmup_count_and_duration():
    calls, started_at = [], []
    samples = measure(lambda: calls.append(1), TimingSettings(warmup=3, min_iterations=20, min_seconds=0.0),
                      on_timed_start=lambda: started_at.append(len(calls)))
    assert len(samples) == 20 and len(calls) == 23 and started_at == [3]  # timers start after the warm-up
    samples = measure(lambda: None, TimingSettings(warmup=0, min_iterations=1, min_seconds=0.05))
    assert len(samples) > 1  # min_iterations=1 was met at once; it kept going for 50 ms


def test_bench_compares_torch_and_onnx_on_the_same_model(tiny_onnx, tmp_path):
    report = run_bench([FACTORY, str(tiny_onnx)], batch_sizes=(1, 4), threads=1, splits=(), timing=FAST)
    validate_report(json.loads(report.to_json()))
    assert report.schema_version == 3 and report.machine.threads == 1
    assert report.machine.peak_gops["fp32"] > 0 and report.machine.peak_gops["int8"] > 0
    assert report.machine.cpu and report.machine.versions["onnxruntime"]
    torch_result, ort_result = report.results
    assert (torch_result.backend, ort_result.backend) == ("torch", "ort-cpu")
    assert torch_result.id.endswith("-torch") and ort_result.id == f"{ort_result.artifact_sha256[:12]}-ort-cpu"
    assert torch_result.parameters == ort_result.parameters > 0
    for result in report.results:
        assert [lat.batch_size for lat in result.latency] == [1, 4]
        assert result.at(4).count == len(result.at(4).samples_ms) >= FAST.min_iterations
        assert 0 < result.at(1).p50_ms <= result.at(1).p90_ms <= result.at(1).p99_ms
        assert result.precision == result.peak_precision == "fp32" and 0 < result.efficiency < 1
    json_path, md_path = write_report(report, tmp_path)
    assert not (tmp_path / "pareto.png").exists()  # no accuracy without a dataset: no Pareto chart
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert BenchReport.load(json_path).results[1].at(4).samples_ms == pytest.approx(ort_result.at(4).samples_ms,
                                                                                      abs=1e-5)
    markdown = md_path.read_text()
    assert "| tiny-image-text | torch |" in markdown and "| tiny-image-text (" in markdown
    assert "Untrained (random) weights" in markdown  # honest about meaningless accuracy


def test_bench_accuracy_is_the_models_real_accuracy(trained_demo):
    report = run_bench([str(trained_demo)], batch_sizes=(2,), threads=1, splits=("val", "ood"), timing=ONE_ROUND)
    model, result = resolve_model(trained_demo), report.results[0]
    for split in ("val", "ood"):
        data = load_split("edgemm-digits", split)
        with torch.inference_mode():  # by hand, not through edgemm's runtime
            logits = np.concatenate([model.module(*[torch.from_numpy(x[n]) for n in model.spec.input_names]).numpy()
                                     for x, _ in data.batches(500)])
        assert result.accuracy[split] == pytest.approx(float((logits.argmax(1) == data.labels).mean()))
    assert result.accuracy["val"] > 0.3  # trained: far above chance (0.1)
    assert f"| {100 * result.accuracy['val']:.1f} % |" in to_markdown(report)


def test_int8_efficiency_is_measured_against_the_int8_peak(trained_onnx, trained_int8):
    """Bug: int8 throughput was compared with the fp32 GEMM peak (committed results showed 103 % and 114 %)."""
    report = run_bench([str(trained_onnx), str(trained_int8)], batch_sizes=(1, 16), threads=1, splits=(),
                       timing=ONE_ROUND)
    fp32, int8 = report.results
    peaks = report.machine.peak_gops
    assert (fp32.precision, int8.precision) == ("fp32", "int8") and int8.peak_precision == "int8"
    for result in (fp32, int8):
        achieved = result.flops_per_item * result.at(16).throughput_per_s / 1e9
        assert result.efficiency == pytest.approx(achieved / peaks[result.precision])
        assert 0 < result.efficiency < 1
    assert "% of int8" in to_markdown(report)


def test_backend_that_cannot_run_the_artifact_is_refused():
    with pytest.raises(EdgemmError, match="cannot run"):
        run_bench([FACTORY], backends=["ort-cpu"], batch_sizes=(1,), splits=(), timing=FAST)
    with pytest.raises(EdgemmError, match="unknown backend 'tpu'"):
        run_bench([FACTORY], backends=["tpu"], batch_sizes=(1,), splits=(), timing=FAST)


def test_the_same_artifact_twice_is_refused(tiny_onnx):
    with pytest.raises(ConfigError, match="already in this run"):
        run_bench([str(tiny_onnx), str(tiny_onnx)], batch_sizes=(1,), splits=(), timing=FAST)


def test_latency_inputs_are_real_eval_samples_and_the_report_says_so():
    feed, origin = latency_inputs(resolve_model("demo-fusion"), 3, "test")
    assert np.array_equal(feed["audio"], load_split("edgemm-digits", "test").inputs["audio"][:3])
    assert origin == "edgemm-digits/test[:3]"
    report = run_bench([FACTORY], batch_sizes=(2,), threads=1, splits=(), timing=ONE_ROUND)
    lat = report.results[0].at(2)
    assert lat.inputs.startswith("generated") and lat.sizes == {"batch": 2, "seq": 6}  # the contract's opt seq
    assert "generated from the contract" in to_markdown(report)


def test_a_batch_size_outside_the_contract_is_refused_before_timing():
    with pytest.raises(InputError, match=r"batch size 64 for tiny-image-text: .*axis 'batch' = 64 is outside \[1, 32\]"):
        run_bench([FACTORY], batch_sizes=(1, 64), threads=1, splits=(), timing=ONE_ROUND)


def test_percentile_confidence_interval_on_known_samples():
    assert percentile_ci(list(range(1, 101)), 50) == (40.0, 61.0)  # ranks 40 and 61: the textbook n=100 interval
    rng = np.random.default_rng(0)
    covered = sum(lo <= 1.0 <= hi for lo, hi in (percentile_ci(rng.lognormal(0, 0.5, 150), 50) for _ in range(400)))
    assert 0.92 <= covered / 400 <= 0.99  # a 95 % interval for the median of lognormal(0, .5), which is 1.0
    assert percentile_ci([3.0, 1.0, 2.0], 50) == (1.0, 3.0)  # too few samples: the extremes, not NaN


def _result(name, latencies, precision="fp32", params=10, backend="ort-cpu", accuracy=None, rid=None) -> Result:
    return Result(id=rid or f"{name}-{backend}", name=name, artifact=f"{name}.onnx", artifact_sha256="0" * 64, kind="onnx",
                  model=name, backend=backend, precision=precision, parameters=params, accuracy=accuracy or {},
                  latency=latencies)


def _report(*results: Result) -> BenchReport:
    return BenchReport(machine=Machine(), results=list(results),
                       settings=BenchSettings(batch_sizes=[1], threads=1, splits=["test"], timing=TimingSettings()))


def test_noise_flag_follows_the_spread():
    tight = Latency(batch_size=1, samples_ms=list(np.random.default_rng(1).normal(10, 0.05, 200)))
    wide = Latency(batch_size=1, samples_ms=list(np.random.default_rng(1).lognormal(2, 0.6, 200)))
    assert not tight.noisy and wide.noisy
    assert any("noisy measurement" in w for w in warnings_for([_result("a", [wide])]))


def test_guards_warn_when_int8_or_pruned_is_not_faster():
    fast, slow = Latency(batch_size=1, samples_ms=[1.0] * 60), Latency(batch_size=1, samples_ms=[2.0] * 60)
    found = warnings_for([_result("fp32", [fast], params=100), _result("int8", [slow], "int8", params=100)])
    assert any(w.startswith("int8 not faster: int8") for w in found)
    found = warnings_for([_result("big", [fast], params=100), _result("pruned", [slow], params=50)])
    assert any(w.startswith("pruned model not faster: pruned") for w in found)
    assert not warnings_for([_result("big", [slow], params=100), _result("pruned", [fast], params=50)])


def test_gate_catches_a_planted_regression():
    lat = lambda ms: [Latency(batch_size=1, samples_ms=[ms] * 60)]  # noqa: E731
    base = _report(_result("m", lat(1.0), accuracy={"test": 0.90}))
    same = _report(_result("m", lat(1.05), accuracy={"test": 0.895}))
    worse = _report(_result("m", lat(1.3), accuracy={"test": 0.85}))
    limits = parse_fail_on("p50=10%,accuracy=1")
    assert limits == {"p50_ms": 0.10, "accuracy": 1.0}
    assert compare(base, same, limits).regressions == []
    found = compare(base, worse, limits).regressions
    assert len(found) == 2 and "p50_ms 1.300 ms vs 1.000 ms (+30.0 % > 10 %)" in found[1]
    with pytest.raises(EdgemmError, match="cannot read 'p50=fast'"):
        parse_fail_on("p50=fast")


def test_regressions_pair_results_by_id_never_by_a_shared_label():
    """Bug: two artifacts shared a label, and the baseline was matched to the wrong row."""
    lat = lambda ms: [Latency(batch_size=1, samples_ms=[ms] * 60)]  # noqa: E731
    baseline = _report(_result("m", lat(1.0), rid="aaa-ort-cpu"), _result("m", lat(5.0), rid="bbb-ort-cpu"))
    current = _report(_result("m", lat(5.0), rid="bbb-ort-cpu"), _result("m", lat(1.0), rid="aaa-ort-cpu"))
    comparison = compare(baseline, current, parse_fail_on("p50=10%"))
    assert comparison.regressions == [] and [how for *_, how in comparison.pairs] == ["id", "id"]
    slower = _report(_result("m", lat(5.5), rid="aaa-ort-cpu"))  # the fast artifact got slower
    assert "batch 1: p50_ms 5.500 ms vs 1.000 ms" in compare(baseline, slower, parse_fail_on("p50=10%")).regressions[0]
    # a rebuilt artifact (new bytes) pairs by name only when the name is unique on both sides
    rebuilt = _report(_result("solo", lat(1.0), rid="ccc-ort-cpu"))
    paired = pair_results(_report(_result("solo", lat(1.0), rid="ddd-ort-cpu")), rebuilt)
    assert [how for *_, how in paired.pairs] == ["name"] and "by name (the artifact's bytes changed)" in paired.notes()[0]
    ambiguous = pair_results(baseline, _report(_result("m", lat(1.0), rid="eee-ort-cpu")))
    assert ambiguous.pairs == [] and "not compared" in ambiguous.notes()[0]
    with pytest.raises(ConfigError, match="no result of this run matches the baseline"):
        gate(baseline, _report(_result("other", lat(1.0), rid="fff-ort-cpu")), parse_fail_on("p50=10%"), "b.json")


def test_schema_file_is_generated_from_the_models():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), \
        "regenerate: python -m edgemm.bench.schema > edgemm/bench/report.schema.json"


def test_schema_rejects_a_broken_report(tiny_onnx):
    import jsonschema

    report = json.loads(run_bench([str(tiny_onnx)], batch_sizes=(1,), threads=1, splits=(), timing=ONE_ROUND).to_json())
    validate_report(report)
    del report["results"][0]["latency"][0]["samples_ms"]
    with pytest.raises(jsonschema.ValidationError, match="samples_ms"):
        validate_report(report)


def test_schema_2_reports_still_load(tmp_path):
    old = json.loads(COMMITTED_V2.read_text())
    assert old["schema_version"] == 2
    report = BenchReport.load(COMMITTED_V2)
    assert len({r.id for r in report.results}) == len(report.results) == len(old["results"])
    first, old_first = report.results[0], old["results"][0]
    assert first.at(1).p50_ms == pytest.approx(old_first["latency"][0]["p50_ms"], rel=1e-4)
    assert report.machine.peak_gops == {"fp32": old["machine"]["peak_gflops_fp32"]}
    assert {r.precision for r in report.results} == {"fp32", "int8"}
    assert any("breakdown" in w and "not carried over" in w for w in report.warnings)
    assert "| demo-fusion | torch |" in to_markdown(report)
    (tmp_path / "v1.json").write_text(json.dumps({**old, "schema_version": 1}))
    with pytest.raises(ConfigError, match="schema_version 1; this edgemm reads 2 and 3"):
        BenchReport.load(tmp_path / "v1.json")
    (tmp_path / "bad.json").write_text(json.dumps({"schema_version": 3, "results": []}))
    with pytest.raises(ConfigError, match="not a valid bench report: machine: Field required"):
        BenchReport.load(tmp_path / "bad.json")
    broken_v2 = {**old, "results": [{k: v for k, v in old["results"][0].items() if k != "backend"}]}
    (tmp_path / "bad2.json").write_text(json.dumps(broken_v2))
    with pytest.raises(ConfigError, match="not a valid schema-2 bench report \\(KeyError"):
        BenchReport.load(tmp_path / "bad2.json")
    (tmp_path / "validation.json").write_text(json.dumps({"passed": True}))
    with pytest.raises(ConfigError, match="is not a bench report \\(it has no schema_version\\)"):
        BenchReport.load(tmp_path / "validation.json")


def test_pareto_plot_of_variants(tmp_path, trained_demo):
    report = run_bench([str(trained_demo)], batch_sizes=(1,), threads=1, splits=("val",), timing=ONE_ROUND)
    written = plot([report], tmp_path)
    assert [p.name for p in written] == ["pareto.png", "latency.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000 for p in written)


def test_fidelity_and_labels(trained_demo, trained_onnx):
    report = run_bench([str(trained_demo), str(trained_onnx)], batch_sizes=(1,), threads=1, splits=("val",),
                       timing=ONE_ROUND, labels=["teacher", "teacher onnx"])
    assert report.results[0].fidelity == {}
    fid = report.results[1].fidelity
    assert fid["top1_agreement_val"] == 1.0 and fid["cosine_val"] > 0.9999
    assert [r.name for r in report.results] == ["teacher", "teacher onnx"]
    relabelled = to_markdown(report, labels={report.results[1].id: "exported"}, title="mine")
    assert relabelled.startswith("## mine") and "| exported | ort-cpu |" in relabelled and "| teacher | torch |" in relabelled
    with pytest.raises(ConfigError, match="1 label\\(s\\) for 2 artifact"):
        run_bench([str(trained_demo), str(trained_onnx)], splits=(), timing=ONE_ROUND, labels=["x"])


def test_torch_compile_backend_matches_eager():
    model = resolve_model(FACTORY)
    feed = model.spec.example_inputs({"batch": 3, "seq": 7})
    eager = load_session(model, "torch", threads=1).run(feed)["scores"]
    session = load_session(model, "torch-compile", threads=1)
    np.testing.assert_allclose(session.run(feed)["scores"], eager, atol=1e-5)
    assert session.backend == "torch-compile"


def test_breakdown_times_each_modality_tower_and_fusion():
    report = run_bench(["demo-fusion"], batch_sizes=(1,), threads=1, splits=(), timing=ONE_ROUND, breakdown=True)
    validate_report(json.loads(report.to_json()))
    stages = report.results[0].breakdown.stages
    assert set(stages) == {"preprocess:image", "preprocess:audio", "preprocess:text", "tower:image", "tower:audio",
                           "tower:text", "fusion head", "end to end", "model only"}
    assert all(s.p50_ms > 0 and s.count == ONE_ROUND.min_iterations for s in stages.values())
    assert "Where the time goes: demo-fusion" in to_markdown(report)


@pytest.mark.gpu
def test_cuda_backend_times_with_events_per_batch_size():
    report = run_bench(["demo-fusion"], backends=["torch-cuda"], batch_sizes=(1, 16), threads=1, splits=("val",),
                       timing=FAST)
    result = report.results[0]
    assert report.machine.gpu and result.memory["device_peak_mb"] > 0
    for lat in result.latency:  # device times of the timed calls only, per batch size
        assert len(lat.device_samples_ms) == lat.count and 0 < lat.device_p50_ms <= lat.p99_ms


@pytest.mark.gpu
def test_torch_and_cuda_sessions_on_one_model():
    """Bug: the CUDA session moved the shared module to the GPU, then FLOP counting ran it with CPU tensors."""
    report = run_bench(["demo-fusion"], backends=["torch", "torch-cuda"], batch_sizes=(1,), threads=1, splits=(),
                       timing=FAST)
    assert [r.backend for r in report.results] == ["torch", "torch-cuda"]
    assert all(r.flops_per_item for r in report.results)


def test_cuda_backend_is_refused_without_a_gpu():
    from edgemm.errors import BackendUnavailable
    from edgemm.runtime import BACKENDS

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        BACKENDS.get("torch-cuda")


def test_onnx_profile_adds_up_by_tower_and_counts_standalone_qdq(tiny_onnx, trained_int8):
    """bench --profile: kernel time per tower of the contract sums to the total; an fp32 graph has no Q/DQ
    nodes left, a static int8 graph has some (the int8<->float borders ORT could not fuse)."""
    fp32, _ = api.bench([str(tiny_onnx)], batch_sizes=(1,), threads=1, timing=FAST, profile=True)
    profile = fp32.results[0].profile
    assert set(profile.by_tower) <= {"pixels", "tokens", "fusion"} and "pixels" in profile.by_tower
    assert sum(profile.by_tower.values()) == pytest.approx(profile.kernel_ms, abs=1e-3)  # each rounded to 0.1 µs
    assert sum(profile.by_op.values()) == pytest.approx(profile.kernel_ms, abs=1e-3)
    assert profile.standalone_qdq_nodes == 0 and profile.nodes > 0
    int8, _ = api.bench([str(trained_int8)], batch_sizes=(1,), threads=1, timing=FAST, profile=True)
    assert int8.results[0].profile.standalone_qdq_nodes > 0
    assert "Where the time goes in the graph" in to_markdown(int8)


def test_profile_aggregation_attributes_kernel_time_to_towers():
    """Synthetic profiler events on a two-tower graph: each kernel's time lands in its node's tower."""
    from onnx import TensorProto, helper
    from edgemm.bench.profile import aggregate
    graph = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["ra"], name="relu_a"), helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
         helper.make_node("Add", ["ra", "rb"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    events = [{"cat": "Node", "name": f"{node}_kernel_time", "dur": dur, "args": {"op_name": op}}
              for node, op, dur in (("relu_a", "Relu", 3000), ("relu_b", "Relu", 1000), ("add", "Add", 2000))]
    events.append({"cat": "Node", "name": "relu_a_fence_before", "dur": 999})  # not a kernel
    profile = aggregate(events, helper.make_model(graph), {"a": "image", "b": "text"}, runs=2, batch_size=1)
    assert profile.by_tower == {"image": 1.5, "fusion": 1.0, "text": 0.5}
    assert profile.by_op == {"Relu": 2.0, "Add": 1.0} and profile.kernel_ms == 3.0


def test_gemm_peak_graph_loads_in_an_older_onnxruntime():
    """Bug (seen on an H100 box with onnx 1.23 and onnxruntime 1.30): the GEMM-peak graph was written at
    onnx's newest IR version (14), which that onnxruntime refuses, so every bench failed there."""
    import numpy as np

    from edgemm.bench.cost import gemm_model

    model = gemm_model("MatMul", np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    assert model.ir_version == 8  # opset 18's IR version: read by every onnxruntime that runs opset 18
    assert model.opset_import[0].version == 18


def test_onnx_runtime_options_come_from_the_export_profile_and_are_recorded(tmp_path, monkeypatch):
    """A deployment is timed with its profile's ONNX Runtime options, and the report says which were used."""
    from edgemm.api import export
    from edgemm.bench.runner import run_bench as bench_run

    monkeypatch.chdir(tmp_path)  # ./export_profiles is searched first
    (tmp_path / "export_profiles").mkdir()
    (tmp_path / "export_profiles" / "edge-box.yaml").write_text(
        "name: edge-box\ntarget: onnx\nort: {allow_spinning: false, memory_pattern: false}\n")
    onnx_path = export("tests.fixtures.user_models:build", profile="edge-box", out_dir=tmp_path / "e").path
    report = bench_run([str(onnx_path), "tests.fixtures.user_models:build"], batch_sizes=(1,), threads=1, splits=(),
                       timing=TimingSettings(warmup=1, min_iterations=3, min_seconds=0, rounds=1))
    ort_row, torch_row = report.results
    assert ort_row.runtime_options == {"graph_optimization_level": "all", "allow_spinning": False,
                                       "memory_pattern": False, "prepacking": True}
    assert torch_row.runtime_options == {}


def test_flops_and_efficiency_are_counted_at_the_sizes_that_were_timed(own_run, own_data, tmp_path):
    """Bug: FLOPs were counted at the contract's opt sizes (seq 32 for MiniLM) while the timed batch held
    captions of 12 tokens, so the efficiency read 186 % of the fp32 peak."""
    from edgemm.bench.cost import torch_flops
    from edgemm.data.datasets import load_split

    model = resolve_model(own_run)
    val = load_split(str(own_data), "val", model.spec)
    rows = len(val.labels)
    longer = {  # README's model with captions of 12 tokens, where its contract's opt length is 8
        "val/pixel_values": val.inputs["pixel_values"], "val/labels": val.labels,
        "val/input_ids": np.concatenate([val.inputs["input_ids"], np.full((rows, 4), 5)], axis=1),
        "val/attention_mask": np.concatenate([val.inputs["attention_mask"], np.ones((rows, 4), np.int64)], axis=1)}
    np.savez(tmp_path / "long.npz", **longer)
    report = run_bench([str(own_run)], batch_sizes=(4,), threads=1, splits=("val",), timing=ONE_ROUND,
                       dataset=str(tmp_path / "long.npz"))
    result = report.results[0]
    timed = result.at(4).sizes
    assert timed["seq"] == 12 != model.spec.axes["seq"].opt
    assert result.flops_per_item == torch_flops(model.module, model.spec, timed) > torch_flops(model.module,
                                                                                                 model.spec)
    assert result.efficiency == pytest.approx(
        result.flops_per_item * result.at(4).throughput_per_s / 1e9 / report.machine.peak_gops["fp32"])
