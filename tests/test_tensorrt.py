"""TensorRT without TensorRT: profiles, shape ranges from the contract, builder settings -> trtexec for
10.x / 11.x / 8.5, the static compatibility check on graphs built to fail it, engine keys, the device
bundle and its script (dry run, refusals, report format). Engine builds and runs are `gpu` tests."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgemm import api
from edgemm.bench.schema import BenchReport
from edgemm.cli.main import app
from edgemm.errors import ConfigError, EngineMismatch
from edgemm.export.profiles import load_profile
from edgemm.models.registry import resolve_model
from edgemm.tensorrt.commands import BuildPlan, shape_arg, trtexec_bench, trtexec_build
from edgemm.tensorrt.compat import check_onnx
from edgemm.tensorrt.engine_key import EngineKey, check_engine_key, jetson_release
from edgemm.tensorrt.settings import TensorRTSettings, axis_ranges, shape_ranges

from tests.conftest import FACTORY

runner = CliRunner()
TRT_PROFILES = ["jetson-orin-nano", "jetson-orin-nano-super", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb",
                "jetson-agx-orin-64gb-dla", "jetson-agx-thor", "jetson-xavier-nx", "rtx-4090", "h100-sxm",
                "tensorrt-gpu"]


def _profile_with(tmp_path: Path, base: str, **changes) -> Path:
    import yaml
    data = yaml.safe_load(Path(f"export_profiles/{base}.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / f"{base}-changed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- profiles ------------------------------------------------------------------------------------------
def test_every_shipped_profile_validates_and_tensorrt_ones_say_what_device():
    profiles = {p.name: p for p in api.profiles()}
    assert {*TRT_PROFILES, "x86-cpu", "arm64-cpu", "torch-tensorrt-gpu"} <= set(profiles)
    for name in TRT_PROFILES:
        p = profiles[name]
        assert p.target == "tensorrt" and p.quantization.symmetric_activations and p.quantization.activations == "int8"
        if name != "tensorrt-gpu":
            assert p.device is not None and p.device.source and p.device.compute_capability
    assert profiles["jetson-agx-thor"].tensorrt.major == 11 and profiles["jetson-xavier-nx"].tensorrt.major == 8
    assert profiles["jetson-orin-nano"].device.power_mode.name == "15W"
    assert profiles["jetson-agx-orin-64gb-dla"].tensorrt.dla.core == 0


@pytest.mark.parametrize("changes, message", [
    ({"tensorrt.dla": {"core": 2}, "tensorrt.shapes": {"batch": {"min": 1, "opt": 1, "max": 1}}}, "has 2 DLA core"),
    ({"tensorrt.dla": {"core": 0}, "tensorrt.shapes": {"batch": {"min": 1, "opt": 1, "max": 8}}}, "DLA cannot run dynamic"),
    ({"quantization.symmetric_activations": False}, "symmetric int8 only"),
    ({"tensorrt.major": 9}, "tensorrt.major"),
    ({"device.power_mode": {"name": "MAXN"}, "device.kind": "gpu"}, "Jetson modules only"),
])
def test_profile_mistakes_are_named(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_profile(_profile_with(tmp_path, "jetson-agx-orin-64gb", **changes))


def test_best_precision_is_for_tensorrt_only(tmp_path):
    with pytest.raises(ConfigError, match="precision best"):
        load_profile(_profile_with(tmp_path, "x86-cpu", precision="best"))


# -- shapes ----------------------------------------------------------------------------------------------
def test_shape_ranges_cover_every_input_from_the_contract():
    spec = resolve_model("demo-fusion").spec
    ranges = shape_ranges(spec, TensorRTSettings())
    assert set(ranges) == {"image", "audio", "text"}  # one profile for every input (TensorRT #768)
    assert ranges["image"] == ((1, 1, 32, 32), (16, 1, 32, 32), (256, 1, 32, 32))
    assert ranges["audio"] == ((1, 40, 16), (16, 40, 100), (256, 40, 400))
    narrowed = shape_ranges(spec, TensorRTSettings(shapes={"batch": {"min": 1, "opt": 2, "max": 8}}))
    assert narrowed["text"] == ((1, 1), (2, 8), (8, 64))


def test_shape_overrides_outside_the_contract_are_refused():
    spec = resolve_model("demo-fusion").spec
    with pytest.raises(ConfigError, match="leaves the model's range 1..256"):
        axis_ranges(spec, TensorRTSettings(shapes={"batch": {"min": 1, "opt": 2, "max": 512}}))
    with pytest.raises(ConfigError, match="axes \\['frames'\\] that the model"):
        axis_ranges(spec, TensorRTSettings(shapes={"frames": {"min": 1, "opt": 2, "max": 3}}))


def test_dla_builds_every_axis_at_its_typical_size():
    spec = resolve_model("demo-fusion").spec
    ranges = shape_ranges(spec, TensorRTSettings(dla={"core": 0}))
    assert all(low == opt == high for low, opt, high in ranges.values())
    assert ranges["audio"][1] == (16, 40, 100)


# -- trtexec ---------------------------------------------------------------------------------------------
def _plan(major: int, precision: str = "int8", **settings) -> BuildPlan:
    spec = resolve_model("demo-fusion").spec
    s = TensorRTSettings(major=major, **settings)
    return BuildPlan(Path("m.onnx"), Path("m.engine"), precision, shape_ranges(spec, s), s, Path("t.cache"),
                     Path("layers.json"))


def test_trtexec_10_is_strongly_typed_without_precision_flags():
    cmd = trtexec_build(_plan(10))
    assert "--stronglyTyped" in cmd and not {"--fp16", "--int8", "--best"} & set(cmd)
    assert "--minShapes=image:1x1x32x32,audio:1x40x16,text:1x1" in cmd
    assert "--maxShapes=image:256x1x32x32,audio:256x40x400,text:256x64" in cmd
    assert {"--memPoolSize=workspace:1024M", "--builderOptimizationLevel=3", "--timingCacheFile=t.cache",
            "--skipInference", "--exportLayerInfo=layers.json"} <= set(cmd)
    assert not any(c.startswith("--workspace") for c in cmd)  # removed in 10.0


def test_trtexec_11_has_no_precision_or_typing_flags():
    cmd = trtexec_build(_plan(11))
    assert not {"--stronglyTyped", "--fp16", "--int8", "--best"} & set(cmd)  # always strongly typed in 11


def test_trtexec_85_is_weakly_typed():
    assert {"--fp16", "--int8", "--buildOnly"} <= set(trtexec_build(_plan(8)))
    fp16 = trtexec_build(_plan(8, "fp16"))
    assert "--fp16" in fp16 and "--int8" not in fp16 and not any("builderOptimizationLevel" in c for c in fp16)
    assert not {"--fp16", "--int8"} & set(trtexec_build(_plan(8, "fp32")))  # an fp32 build stays fp32


def test_trtexec_dla_and_sparsity_flags():
    cmd = trtexec_build(_plan(10, dla={"core": 1, "gpu_fallback": True}, sparsity=True))
    assert {"--useDLACore=1", "--allowGPUFallback", "--sparsity=enable"} <= set(cmd)
    # The ONNX keeps its dynamic axes: every input's shape is given (trtexec would take 1 for the rest)
    assert "--minShapes=image:16x1x32x32,audio:16x40x100,text:16x8" in cmd
    assert "--maxShapes=image:16x1x32x32,audio:16x40x100,text:16x8" in cmd
    bench = trtexec_bench(Path("m.engine"), {"x": (1, 3)}, TensorRTSettings(dla={"core": 1}), Path("t.json"))
    assert "--useDLACore=1" in bench and "--useCudaGraph" not in bench  # DLA cannot be graph-captured


def test_shape_names_with_colons_are_quoted():
    assert shape_arg({"input:0": (1, 3), "y": (2,)}) == "'input:0':1x3,y:2"


# -- engine keys ------------------------------------------------------------------------------------------
def test_engine_key_mismatch_is_refused_with_the_rebuild_command():
    built = EngineKey("10.3.0", "8.7", "R36.4.0", "int8")
    check_engine_key(Path("m.engine"), built, built, "rebuild")  # the same key loads
    here = EngineKey("10.7.0", "8.9", None, "int8")
    with pytest.raises(EngineMismatch) as err:
        check_engine_key(Path("m.engine"), built, here, "python3 build_on_device.py")
    text = str(err.value)
    assert "TensorRT 10.3.0 (engine) vs 10.7.0 (here)" in text and "compute capability 8.7" in text
    assert "Jetson L4T release R36.4.0" in text and "python3 build_on_device.py" in text
    assert EngineKey.from_dict(built.to_dict()) == built


def test_jetson_release_is_read_from_nv_tegra_release(tmp_path):
    f = tmp_path / "nv_tegra_release"
    f.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n")
    assert jetson_release(f) == "R36.4.0"
    assert jetson_release(tmp_path / "absent") is None


# -- compatibility check ------------------------------------------------------------------------------------
def _graph(nodes, inputs, outputs, initializers=(), opset=18, path=None):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def _x(name="x", dims=("batch", 4)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def test_unsupported_op_and_asymmetric_qdq_are_named_with_node_reason_and_fix(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.int8), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant_x"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dequant_x"),
             helper.make_node("MatMul", ["dq", "w"], ["m"], name="mm"),
             helper.make_node("Unique", ["m"], ["y"], name="uniq")]
    path = _graph(nodes, [_x()], [_x("y", ("n",))], [w, scale, zp], path=tmp_path / "bad.onnx")
    report = check_onnx(path, TensorRTSettings(), axes={"batch"})
    errors = {(f.where, f.reason.split(":")[0]) for f in report.errors}
    assert ("uniq (Unique)", "TensorRT's ONNX parser does not support Unique") in errors
    assert ("quant_x (QuantizeLinear)", "asymmetric quantization (zero point != 0)") in errors
    assert all(f.fix for f in report.findings)


def test_cpu_int8_from_compress_is_flagged_for_tensorrt(trained_int8):
    """The x86 scheme (uint8 activations, asymmetric) is what TensorRT refuses: a real compress output."""
    report = api.inspect(trained_int8, profile="tensorrt-gpu")
    assert any("uint8 (asymmetric)" in f.reason for f in report.errors)
    result = runner.invoke(app, ["inspect", str(trained_int8), "--profile", "tensorrt-gpu"])
    assert result.exit_code == 3 and "will not take" in result.output and "fix:" in result.output


def test_ort_integer_ops_dynamic_axes_without_range_and_old_opsets(tmp_path):
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dq0")]
    outs = [helper.make_tensor_value_info(n, t, d) for n, t, d in
            (("q", TensorProto.UINT8, ["batch", 4]), ("s", TensorProto.FLOAT, []), ("z", TensorProto.UINT8, []))]
    path = _graph(nodes, [_x()], outs, path=tmp_path / "dyn.onnx")
    report = check_onnx(path, TensorRTSettings(), axes=())
    reasons = " | ".join(f.reason for f in report.errors)
    assert "ONNX Runtime's integer-arithmetic int8" in reasons
    assert "dimension 0 (batch) is dynamic but has no min/opt/max" in reasons
    assert not check_onnx(path, TensorRTSettings(shapes={"batch": {"min": 1, "opt": 1, "max": 4}}), ()).errors[1:]
    old = check_onnx(path, TensorRTSettings(major=8), axes={"batch"})
    assert any("TensorRT 8 parses opsets 7-17" in f.reason for f in old.errors)


def test_constant_axes_and_fake_quantized_weights_are_accepted(tmp_path):
    """Legacy (opset 16) exports give Reduce axes through Constant nodes; pytorch-quantization/ModelOpt write
    per-channel W -> Q -> DQ -> Conv. TensorRT takes both: no error may block them."""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    s = numpy_helper.from_array(np.full(2, 0.1, np.float32), "s")
    z = numpy_helper.from_array(np.zeros(2, np.int8), "z")
    axes = helper.make_tensor("axes_value", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], name="wq", axis=0),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wdq"], name="wdq", axis=0),
             helper.make_node("Conv", ["x", "wdq"], ["c"], name="conv"),
             helper.make_node("Constant", [], ["axes"], name="axes", value=axes),
             helper.make_node("ReduceSum", ["c", "axes"], ["y"], name="sum")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 4, 4])
    path = _graph(nodes, [x], [y], [w, s, z], opset=16, path=tmp_path / "fq.onnx")
    assert check_onnx(path, TensorRTSettings(), axes={"batch"}).findings == []


def test_qdq_that_does_not_feed_a_weighted_op_is_a_warning(tmp_path):
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
             helper.make_node("LayerNormalization", ["dq", "s"], ["y"], name="ln", axis=-1)]
    path = _graph(nodes, [_x()], [_x("y")], [s, z], path=tmp_path / "ln.onnx")
    report = check_onnx(path, TensorRTSettings(), axes={"batch"})
    assert not report.errors
    assert [f.where for f in report.findings] == ["dq (DequantizeLinear)"]
    assert "LayerNormalization" in report.findings[0].reason and "will not fuse" in report.findings[0].reason
    dla = check_onnx(path, TensorRTSettings(dla={"core": 0, "gpu_fallback": False}), axes={"batch"})
    assert any("DLA cannot run LayerNormalization" in f.reason for f in dla.errors)


# -- bundle -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The fixture user model exported for a Jetson Orin Nano: int8 (made and checked here) + fp16."""
    out = tmp_path_factory.mktemp("bundle")
    result = api.export(FACTORY, target="tensorrt", profile="jetson-orin-nano", out_dir=out,
                        data="tests.fixtures.user_models:data_splits")
    assert result.path == out and result.details["bundle"]
    return out


def test_bundle_holds_graphs_plan_commands_script_and_manifest(bundle):
    names = {p.name for p in bundle.iterdir()}
    assert {"model.fp16.onnx", "build.json", "profile.yaml", "commands.sh", "build_on_device.py", "README.md",
            "compatibility.json", "manifest.json"} <= names
    plan = json.loads((bundle / "build.json").read_text())
    assert plan["tensorrt_major"] == 10 and plan["precision_policy"] == "int8" and plan["batch_sizes"] == [1, 16]
    assert {c["precision"] for c in plan["candidates"]} >= {"fp16"}
    fp16 = onnx.load(str(bundle / "model.fp16.onnx"))
    assert any(t.data_type == TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # fp32 I/O
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["kind"] == "tensorrt-bundle" and manifest["metrics"]["validation_passed"] is True
    assert "--stronglyTyped" in (bundle / "commands.sh").read_text()


def test_bundle_script_dry_run_prints_every_command(bundle):
    done = subprocess.run([sys.executable, str(bundle / "build_on_device.py"), "--dry-run"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    plan = json.loads((bundle / "build.json").read_text())
    for c in plan["candidates"]:
        assert f"build {c['precision']}: trtexec --onnx={c['onnx']}" in done.stdout
        assert f"time {c['precision']} batch 16:" in done.stdout
    assert "keep int8 only if >= 1.02x faster than fp16" in done.stdout


def test_bundle_script_refuses_a_changed_graph_and_a_missing_trtexec(bundle, tmp_path):
    import shutil
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    for args, message in (([], "trtexec"), (["--builder", "trtexec"], "--builder trtexec: trtexec not found"),
                          (["--set-power-mode", "--dry-run"], "not a Jetson")):
        done = subprocess.run([sys.executable, str(copy / "build_on_device.py"), *args], capture_output=True,
                              text=True)
        assert done.returncode == 2 and message in done.stderr and "fix:" in done.stderr, done.stderr
    plan = (copy / "build.json").read_text()
    (copy / "build.json").write_text(plan[: len(plan) // 2])  # truncated
    done = subprocess.run([sys.executable, str(copy / "build_on_device.py"), "--dry-run"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "missing or unreadable" in done.stderr and "Traceback" not in done.stderr
    (copy / "build.json").write_text(plan)
    with open(copy / "model.fp16.onnx", "ab") as f:
        f.write(b"\0")
    done = subprocess.run([sys.executable, str(copy / "build_on_device.py"), "--dry-run"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "sha256 mismatch" in done.stderr


def _script(bundle: Path):
    spec = importlib.util.spec_from_file_location("bundle_script", bundle / "build_on_device.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_int8_ships_only_where_it_beats_fp16(bundle):
    script = _script(bundle)
    plan = {"precision_policy": "int8", "min_int8_speedup": 1.02}

    def timed(b1: float, b16: float) -> dict:
        return {1: {"latency_ms": [b1] * 5}, 16: {"latency_ms": [b16] * 5}}
    kept = script.decide(plan, {"int8": timed(1.0, 4.0), "fp16": timed(1.5, 6.0)})
    assert kept["chosen"] == "int8" and "pays for itself" in kept["why"]
    dropped = script.decide(plan, {"int8": timed(1.0, 5.95), "fp16": timed(1.5, 6.0)})  # 1.008x at batch 16
    assert dropped["chosen"] == "fp16" and "fp16 ships" in dropped["why"]
    failed = script.decide(plan, {"int8": {}, "fp16": timed(1.5, 6.0)})  # int8 did not build
    assert failed["chosen"] == "fp16"
    best = script.decide({**plan, "precision_policy": "best"}, {"int8": timed(1.0, 7.0), "fp16": timed(1.5, 6.0)})
    assert best["chosen"] == "fp16"
    # int8 timed at batch 1 only (its batch-16 run failed): compared where both ran, never unchecked
    partial = {"int8": {1: {"latency_ms": [1.0]}}, "fp16": timed(1.5, 6.0)}
    assert script.decide(plan, partial)["speedup_int8_vs_fp16"] == {"1": 1.5}
    assert script.decide({**plan, "precision_policy": "best"}, partial)["chosen"] == "int8"
    apart = {"int8": {1: {"latency_ms": [1.0]}}, "fp16": {16: {"latency_ms": [6.0]}}}
    assert script.decide(plan, apart)["chosen"] == "fp16"


def test_device_report_is_an_edgemm_report(bundle, tmp_path):
    """The script turns trtexec's --exportTimes rows into edgemm's schema-3 report, which `edgemm report` reads."""
    script = _script(bundle)
    plan = json.loads((bundle / "build.json").read_text())
    rows = [{"startEnqMs": i, "endD2hMs": i + 0.9, "latencyMs": 0.9, "computeMs": 0.7} for i in range(20)]
    timing = script.parse_times(rows)
    assert timing["latency_ms"] == [0.9] * 20 and timing["compute_ms"] == [0.7] * 20
    timing["power_mw"] = script.parse_tegrastats(
        "RAM 2000/7620MB CPU [5%@729] GR3D_FREQ 60% VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 1200mW/1100mW\n"
        "RAM 2000/7620MB CPU [5%@729] GR3D_FREQ 61% VDD_IN 7000mW/6000mW VDD_CPU_GPU_CV 1400mW/1200mW\n")
    assert timing["power_mw"] == 6000  # the module's input rail, not the sum of rails
    fp16 = next(c for c in plan["candidates"] if c["precision"] == "fp16")
    engine = bundle / fp16["engine"]
    engine.parent.mkdir(exist_ok=True)
    engine.write_bytes(b"engine bytes")
    env = {"tensorrt": "10.3.0", "jetson": "R36.4.0", "power_mode": "15W", "timer": "trtexec",
           "gpu": {"name": "Orin", "compute_capability": "8.7"}}
    decision = {"chosen": "fp16", "why": "the only engine built", "speedup_int8_vs_fp16": {}, "built": ["fp16"]}
    data = script.report(plan, {"fp16": {1: timing}}, env, decision)
    (tmp_path / "report.json").write_text(json.dumps(data))
    loaded = BenchReport.load(tmp_path / "report.json")
    row = loaded.results[0]
    assert row.backend == "tensorrt" and row.precision == "fp16" and row.at(1).p50_ms == pytest.approx(0.9)
    assert row.power["b1_mean_mw"] == 6000 and loaded.machine.model_extra["jetson_release"] == "R36.4.0"
    result = runner.invoke(app, ["report", str(tmp_path / "report.json"), "-o", str(tmp_path / "md")])
    assert result.exit_code == 0, result.output
    assert "tensorrt" in (tmp_path / "md" / "report.md").read_text()


def test_export_tensorrt_cli_says_it_wrote_a_bundle(tmp_path):
    result = runner.invoke(app, ["export", FACTORY, "--target", "tensorrt", "--profile", "jetson-agx-orin-64gb-dla",
                                 "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "TensorRT bundle:" in result.output and "build_on_device.py" in result.output
    plan = json.loads((tmp_path / "build.json").read_text())
    assert [c["precision"] for c in plan["candidates"]] == ["fp16"] and plan["dla_core"] == 0
    assert all(lo == hi for c in plan["candidates"] for lo, _, hi in c["shapes"].values())
    compat = json.loads((tmp_path / "compatibility.json").read_text())
    assert any("DLA cannot run Gather" in f["reason"] for f in compat["fp16"]["findings"])  # the embedding


def test_export_refuses_a_graph_tensorrt_cannot_take(tmp_path, trained_int8):
    result = runner.invoke(app, ["export", str(trained_int8), "--target", "tensorrt", "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "TensorRT will not take this graph" in result.output
    assert not (tmp_path / "o" / "manifest.json").exists()  # nothing that looks complete
    assert (tmp_path / "o" / "compatibility.json").exists()


def test_xavier_export_writes_opset_16_without_layernorm(tmp_path):
    """TensorRT 8.5 (JetPack 5) parses opsets up to 17 and no LayerNormalization: the Xavier profile exports with
    the legacy exporter at opset 16, validated like any export, and the compatibility check passes."""
    result = api.export("demo-fusion", target="tensorrt", profile="jetson-xavier-nx", out_dir=tmp_path)
    assert result.validation.passed
    fp16 = onnx.load(str(tmp_path / "model.fp16.onnx"))
    assert fp16.opset_import[0].version == 16 and "LayerNormalization" not in {n.op_type for n in fp16.graph.node}
    compat = json.loads((tmp_path / "compatibility.json").read_text())
    assert compat["fp16"]["errors"] == 0 and compat["fp16"]["tensorrt_major"] == 8
    assert "--fp16" in (tmp_path / "commands.sh").read_text()  # 8.5: weakly typed


def test_engines_default_to_the_tensorrt_backend(tmp_path):
    from edgemm.runtime.session import default_backend

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "m.engine.json").write_text(json.dumps({"spec": resolve_model(FACTORY).spec.model_dump(mode="json"),
                                                        "key": EngineKey("10.3.0", "8.7", None, "fp16").to_dict()}))
    loaded = resolve_model(str(engine))
    assert loaded.artifact_kind == "engine" and default_backend(loaded) == "tensorrt"
    result = runner.invoke(app, ["bench", str(engine), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "backend 'tensorrt' is not usable here" in result.output


def test_bench_batch_sizes_outside_the_model_are_refused_before_export(tmp_path):
    profile = _profile_with(tmp_path, "jetson-orin-nano", **{"tensorrt.shapes": {}, "tensorrt.bench":
                                                              {"batch_sizes": [64, 128]}})
    result = runner.invoke(app, ["export", FACTORY, "--target", "tensorrt", "--profile", str(profile),
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "none of tensorrt.bench.batch_sizes [64, 128]" in result.output
    assert not (tmp_path / "o" / "onnx").exists()  # refused before the export ran


def test_profiles_commands(tmp_path):
    listed = runner.invoke(app, ["profiles", "list"])
    assert listed.exit_code == 0 and "jetson-orin-nano" in listed.output and "MAXN" in listed.output
    shown = runner.invoke(app, ["profiles", "show", "jetson-orin-nano"])
    assert shown.exit_code == 0 and "nvpmodel_id: 0" in shown.output and "workspace_mib: 1024" in shown.output


# -- on a GPU with TensorRT ------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_engine_builds_runs_and_matches_onnx_runtime(bundle, tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install 'edgemm[tensorrt]' from NVIDIA's index)")
    from edgemm.tensorrt.builder import build_from_bundle
    from edgemm.runtime import load_session

    built = build_from_bundle(bundle / "build.json", "fp16")
    engine = resolve_model(str(built.path))
    feed = engine.spec.example_inputs({"batch": 2, "seq": 6}, seed=1)
    got = load_session(engine, "tensorrt").run(feed)["scores"]
    want = load_session(resolve_model(str(bundle / "onnx" / "model.onnx")), "ort-cpu").run(feed)["scores"]
    assert np.allclose(got, want, atol=5e-2)
    from edgemm.bench.latency import TimingSettings
    from edgemm.bench.runner import run_bench

    report = run_bench([str(built.path)], backends=["tensorrt"], batch_sizes=(1,), threads=1, splits=(),
                       timing=TimingSettings(warmup=2, min_iterations=5, min_seconds=0, rounds=1))
    row = report.results[0]
    assert row.precision == "fp16" and row.engine_layers and row.at(1).device_samples_ms
