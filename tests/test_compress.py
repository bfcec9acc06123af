"""Compression stages on a small trained model: each really does its job, gates really stop."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgemm.bench.latency import TimingSettings
from edgemm.compress.calibration import check_calibration
from edgemm.compress.distill import distillation_loss
from edgemm.compress.fallback import quantize_with_fallback
from edgemm.compress.graph import FUSION, node_towers
from edgemm.compress.pipeline import compress
from edgemm.compress.prune import prune
from edgemm.compress.recipe import DistillStage, PruneStage, QuantizeStage, Recipe, load_recipe
from edgemm.data.datasets import load_split
from edgemm.errors import ConfigError, GateFailed, InputError
from edgemm.export.onnx import export_onnx
from edgemm.export.profiles import load_profile
from edgemm.models.registry import resolve_model, save_model
from edgemm.train import TrainConfig, to_tensors, train_classifier

FAST = TimingSettings(warmup=1, min_iterations=3, min_seconds=0.0)


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory) -> Path:
    """The demo fusion model after a short training run (~65 % val accuracy): a real teacher."""
    model = resolve_model("demo-fusion")
    train, val = load_split("edgemm-digits", "train"), load_split("edgemm-digits", "val")
    train_classifier(model.module, model.spec, train, val, TrainConfig(epochs=1, max_steps=120))
    folder = tmp_path_factory.mktemp("teacher")
    save_model(model, folder)
    return folder


@pytest.fixture(scope="session")
def trained_onnx(trained_demo, tmp_path_factory) -> Path:
    return export_onnx(resolve_model(trained_demo), tmp_path_factory.mktemp("teacher_onnx"),
                       load_profile("x86-cpu")).onnx_path


def test_prune_makes_the_model_smaller_and_it_reloads_without_pickle(trained_demo, tmp_path):
    model = resolve_model(trained_demo)
    info = prune(model, PruneStage(stage="prune", ratio=0.5, towers={"text": 0.25}), round_to=8)
    assert info["parameters_after"] < 0.7 * info["parameters_before"]
    assert info["heads_after"] < info["heads_before"]
    convs = [m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    save_model(model, tmp_path)
    assert not list(tmp_path.glob("*.pt")) and "structure" in json.loads((tmp_path / "model.json").read_text())
    restored = resolve_model(tmp_path)
    feed = to_tensors(model.spec, model.spec.example_inputs({"batch": 3, "time": 60, "seq": 5}))
    assert torch.equal(model.module(*feed), restored.module(*feed))
    result = export_onnx(restored, tmp_path / "onnx", load_profile("x86-cpu"))  # still exports, dynamic axes
    assert result.validation.passed


def test_prune_rejects_unknown_tower(trained_demo):
    with pytest.raises(ConfigError, match="prune.towers: 'smell'"):
        prune(resolve_model(trained_demo), PruneStage(stage="prune", towers={"smell": 0.5}), round_to=8)


def test_distillation_lowers_the_students_loss(trained_demo):
    from edgemm.compress.distill import distill

    teacher, student = resolve_model(trained_demo), resolve_model(trained_demo)
    prune(student, PruneStage(stage="prune", ratio=0.5), round_to=8)
    config = DistillStage(stage="distill", epochs=1, max_steps=40, feature_weight=0.5)
    batch = load_split("edgemm-digits", "val").head(128)
    inputs, labels = to_tensors(student.spec, batch.inputs), torch.from_numpy(batch.labels)
    loss = distillation_loss(teacher.module, config)
    with torch.no_grad():
        before = loss(student.module.eval(), inputs, labels).item()
    distill(student, teacher, config)
    with torch.no_grad():
        after = loss(student.module.eval(), inputs, labels).item()
    assert after < 0.8 * before


def test_distillation_runs_under_torchrun_with_two_processes(trained_demo, tmp_path):
    student = resolve_model(trained_demo)
    prune(student, PruneStage(stage="prune", ratio=0.3), round_to=8)
    save_model(student, tmp_path / "student")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_port=29533", "-m", "edgemm.compress.distill",
           "--teacher", str(trained_demo), "--student", str(tmp_path / "student"), "--out", str(tmp_path / "out"),
           "--epochs", "1", "--max-steps", "6"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "world 2: best val accuracy" in done.stdout
    trained = resolve_model(tmp_path / "out")  # rank 0 saved a loadable, pruned student
    assert trained.parameter_count() == student.parameter_count()


def test_onnx_nodes_are_assigned_to_towers(trained_onnx):
    towers = node_towers(onnx.load(str(trained_onnx)))
    found = set(towers.values())
    assert {"image", "audio", "text", FUSION} <= found


def test_quantized_model_has_qdq_and_agrees_with_fp32(trained_onnx, tmp_path):
    from edgemm.bench.backends import get_backend

    fp32 = resolve_model(str(trained_onnx))
    spec, val = fp32.spec, load_split("edgemm-digits", "val").for_inputs(fp32.spec.input_names)
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(128).for_inputs(spec.input_names))
    shutil.copy(trained_onnx, tmp_path / "fp32.onnx")
    ref_logits = get_backend("ort-cpu").load(fp32).run(val.inputs)["logits"]

    def agreement(path: Path) -> float:
        import onnxruntime as ort

        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, val.inputs)[0]
        return float((out.argmax(1) == ref_logits.argmax(1)).mean())

    outcome = quantize_with_fallback(tmp_path / "fp32.onnx", tmp_path, QuantizeStage(stage="quantize"),
                                     load_profile("x86-cpu").quantization, feeds, agreement, min_accuracy=0.95)
    ops = [n.op_type for n in onnx.load(str(outcome.path)).graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    assert outcome.accuracy >= 0.95 and agreement(outcome.path) == outcome.accuracy


@pytest.mark.parametrize("granularity, retreat", [("tower", "keep tower"), ("node", "keep nodes")])
def test_fallback_keeps_parts_in_float_then_fails_loudly(trained_onnx, tmp_path, granularity, retreat):
    """An unreachable gate: parts are kept in float try by try, then it raises instead of returning a model."""
    spec = resolve_model(str(trained_onnx)).spec
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(64).for_inputs(spec.input_names))
    shutil.copy(trained_onnx, tmp_path / "fp32.onnx")
    config = QuantizeStage(stage="quantize", fallback={"max_tries": 2, "granularity": [granularity]})
    with pytest.raises(GateFailed, match=rf"misses its accuracy gate.*after 3 tries.*{retreat}") as err:
        quantize_with_fallback(tmp_path / "fp32.onnx", tmp_path, config, load_profile("x86-cpu").quantization,
                               feeds, evaluate=lambda p: 0.5, min_accuracy=0.9)
    assert "quantize all → 50.00 %" in str(err.value)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.inputs["audio"].__setitem__((3, 0, 0), np.nan), "calibration batch at sample 0: .*NaN"),
    (lambda s: s.inputs.pop("text"), r"lacks input\(s\) \['text'\] \(text\)"),
])
def test_bad_calibration_data_is_refused(trained_demo, mutate, message):
    spec = resolve_model(trained_demo).spec
    split = load_split("edgemm-digits", "train").head(40)
    split.inputs = {k: v.copy() for k, v in split.inputs.items()}
    mutate(split)
    with pytest.raises(InputError, match=message):
        check_calibration(spec, split)


@pytest.mark.parametrize("yaml_text, message", [
    ("name: r\nstages:\n  - stage: prune\n    ratoi: 0.5\n", "stages.0.prune.ratoi: Extra inputs are not permitted"),
    ("name: r\nstages:\n  - stage: shrink\n", "stages.0: Input tag 'shrink'"),
    ("name: r\ngates:\n  max_accuracy_drop: lots\nstages:\n  - stage: quantize\n", "gates.max_accuracy_drop"),
    ("name: r\ncolour: red\nstages:\n  - stage: quantize\n", "colour: Extra inputs"),
    ("name: r\nstages:\n  - stage: quantize\n  - stage: prune\n", "quantize must be the last stage"),
])
def test_bad_recipes_name_the_key(tmp_path, yaml_text, message):
    (tmp_path / "r.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(tmp_path / "r.yaml")


def test_shipped_recipes_load():
    for name in ("prune-distill-int8", "int8", "fp16"):
        assert load_recipe(name).name == name


def _recipe(stages=("prune", "distill", "quantize"), **gates) -> Recipe:
    """A quick recipe; the accuracy gate is loose because these tests check the plumbing, not the numbers."""
    configs = {"prune": {"stage": "prune", "ratio": 0.3}, "distill": {"stage": "distill", "epochs": 1, "max_steps": 30},
               "quantize": {"stage": "quantize", "calibration_samples": 128}}
    return Recipe.model_validate({
        "name": "small", "target": "x86-cpu", "gates": {"split": "val", "max_accuracy_drop": 15.0, **gates},
        "stages": [configs[s] for s in stages]})


def test_compress_end_to_end_writes_final_model_and_reuses_stages(trained_demo, tmp_path):
    logs: list[str] = []
    result = compress(str(trained_demo), _recipe(), tmp_path, batch_sizes=(1,), timing=FAST, log=logs.append)
    assert result.gates["passed"] and result.final.is_file()
    assert [s["stage"] for s in result.stages] == ["prune", "distill", "export", "quantize"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["config"]["recipe"]["name"] == "small"
    stage_manifest = json.loads((tmp_path / "02-prune" / "manifest.json").read_text())
    assert stage_manifest["inputs"]["sha256"] and "torch" in stage_manifest["versions"]
    assert "(c) compressed: small" in (tmp_path / "report.md").read_text()
    final = resolve_model(str(result.final))
    assert final.spec == resolve_model(trained_demo).spec  # deployable artifact carries the contract
    logs.clear()
    compress(str(trained_demo), _recipe(), tmp_path, batch_sizes=(1,), timing=FAST, log=logs.append)
    assert sum("unchanged inputs, reusing" in line for line in logs) == 5  # reference export + 4 stages
    quantize_only = compress(str(trained_demo), _recipe(("quantize",)), tmp_path / "q", batch_sizes=(1,), timing=FAST,
                             log=logs.append)
    assert [s["stage"] for s in quantize_only.stages] == ["quantize"]  # quantizes the reference export directly


def test_missed_gate_fails_and_leaves_no_final_model(trained_demo, tmp_path):
    with pytest.raises(GateFailed, match=r"speed-up over ORT fp32 is .*required 1000"):
        compress(str(trained_demo), _recipe(("quantize",), min_speedup=1000), tmp_path, batch_sizes=(1,), timing=FAST,
                 log=lambda _m: None)
    assert not (tmp_path / "final").exists() and not (tmp_path / "manifest.json").exists()
    report = json.loads((tmp_path / "gate_report.json").read_text())
    assert not report["gates"]["passed"] and "FAILED" in (tmp_path / "report.md").read_text()


def test_inc_backend_quantizes_the_torch_model_to_onnx_qdq(trained_demo, tmp_path):
    pytest.importorskip("neural_compressor", reason="INC is the optional 'inc' extra")
    recipe = Recipe.model_validate({"name": "inc", "gates": {"max_accuracy_drop": 15.0},
                                    "stages": [{"stage": "quantize", "backend": "inc", "calibration_samples": 64,
                                                "fallback": {"max_tries": 0}}]})
    result = compress(str(trained_demo), recipe, tmp_path, batch_sizes=(1,), timing=FAST, log=lambda _m: None)
    ops = [n.op_type for n in onnx.load(str(result.final)).graph.node]
    assert ops.count("QuantizeLinear") > 5
    assert result.stages[0]["stage"] == "quantize" and result.gates["passed"]
    graph = onnx.load(str(result.final)).graph
    assert [d.dim_param for d in graph.input[1].type.tensor_type.shape.dim] == ["batch", "", "time"]


@pytest.mark.parametrize("backend", ["fp16", "modelopt"])
def test_other_quantizer_backends_keep_agreement(trained_onnx, tmp_path, backend):
    """fp16 (GPU targets) and NVIDIA ModelOpt int8 (TensorRT placement) behind the same interface."""
    from edgemm.compress.quantize import QUANTIZERS

    if QUANTIZERS[backend].unavailable_reason():
        pytest.skip(f"{backend}: {QUANTIZERS[backend].unavailable_reason()}")
    spec = resolve_model(str(trained_onnx)).spec
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(64).for_inputs(spec.input_names))
    out = QUANTIZERS[backend].quantize(trained_onnx, tmp_path / "q.onnx", feeds,
                                        load_profile("tensorrt-gpu").quantization, "static", [])
    import onnxruntime as ort

    val = load_split("edgemm-digits", "val").head(300).for_inputs(spec.input_names)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, val.inputs)[0]  # noqa: E731
    agreement = float((run(out).argmax(1) == run(trained_onnx).argmax(1)).mean())
    assert agreement >= 0.95  # the fixture teacher is briefly trained: many near-ties
    graph = onnx.load(str(out)).graph
    if backend == "fp16":
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    else:
        assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 5
