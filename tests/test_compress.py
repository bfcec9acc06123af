"""Compression stages on a small trained model: each really does its job, gates really stop."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pydantic
import pytest
import torch

from edgemm.bench.latency import TimingSettings
from edgemm.compress.calibration import check_calibration
from edgemm.compress.fallback import quantize_with_fallback
from edgemm.models.graph_towers import FUSION, node_towers, nodes_by_tower
from edgemm.compress.pipeline import compress
from edgemm.compress.quantizer import QUANTIZERS
from edgemm.compress.recipe import load_recipe, recipe_model
from edgemm.compress.stages.distill import DistillationLoss, DistillConfig, distill
from edgemm.compress.stages.prune import PruneConfig, prune
from edgemm.data.datasets import load_split
from edgemm.errors import ConfigError, GateFailed, InputError
from edgemm.export.profiles import load_profile
from edgemm.export.targets.onnx import export_onnx, save_onnx
from edgemm.models.registry import resolve_model, save_model
from edgemm.runtime import accuracy, load_session, task_outputs
from edgemm.runtime.convert import to_tensors

FAST = TimingSettings(warmup=1, min_iterations=3, min_seconds=0.0, rounds=2)
X86 = load_profile("x86-cpu").quantization


def _ort_config(**fields):
    return QUANTIZERS.get("ort").config(stage="quantize", **fields)


def _fallback(fp32: Path, work: Path, feeds, evaluate, min_accuracy: float, **fallback):
    """The ORT quantizer under the accuracy-aware fallback, as the quantize stage runs it."""
    ort, config = QUANTIZERS.get("ort"), _ort_config(fallback=fallback) if fallback else _ort_config()

    def quantize(out: Path, keep_float: list[str]) -> Path:
        return ort.quantize(fp32, out, feeds, X86, config, keep_float)

    return quantize_with_fallback(fp32, ort.prepare(fp32, work), work, quantize, X86.op_types, config.keep_float,
                                  config.fallback, feeds, evaluate, min_accuracy)


def test_prune_makes_the_model_smaller_and_it_reloads_without_pickle(trained_demo, tmp_path):
    model = resolve_model(trained_demo)
    info = prune(model, PruneConfig(stage="prune", ratio=0.5, towers={"text": 0.25}), round_to=8)
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
        prune(resolve_model(trained_demo), PruneConfig(stage="prune", towers={"smell": 0.5}), round_to=8)


def test_distillation_lowers_the_students_loss(trained_demo):
    teacher, student = resolve_model(trained_demo), resolve_model(trained_demo)
    prune(student, PruneConfig(stage="prune", ratio=0.5), round_to=8)
    config = DistillConfig(stage="distill", epochs=1, max_steps=40, feature_weight=0.5)
    batch = load_split("edgemm-digits", "val").head(128)
    inputs, labels = to_tensors(student.spec, batch.inputs), torch.from_numpy(batch.labels)
    loss = DistillationLoss(teacher.module, config)
    with torch.no_grad():
        before = loss(student.module.eval(), inputs, labels).item()
    loss.close()
    distill(student, teacher, config)
    assert not any(t._forward_hooks for t in teacher.module.towers.values())  # distill unhooks what it hooked
    with torch.no_grad():
        after = loss(student.module.eval(), inputs, labels).item()
    assert after < 0.8 * before


def test_distillation_runs_under_torchrun_with_two_processes(trained_demo, tmp_path):
    student = resolve_model(trained_demo)
    prune(student, PruneConfig(stage="prune", ratio=0.3), round_to=8)
    save_model(student, tmp_path / "student")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_port=29533", "-m", "edgemm.compress.stages.distill",
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
    """The fallback tunes on val agreement; the result is judged on samples it never saw (the test split)."""
    fp32 = resolve_model(str(trained_onnx))
    spec, val, test = fp32.spec, load_split("edgemm-digits", "val"), load_split("edgemm-digits", "test")
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(128).for_inputs(spec.input_names))
    shutil.copy(trained_onnx, tmp_path / "fp32.onnx")
    reference = task_outputs(load_session(fp32), val).argmax(1)

    def val_agreement(path: Path) -> float:
        session = load_session(resolve_model(str(save_onnx(onnx.load(str(path)), spec, path))))
        return float((task_outputs(session, val).argmax(1) == reference).mean())

    outcome = _fallback(tmp_path / "fp32.onnx", tmp_path, feeds, val_agreement, min_accuracy=0.95)
    ops = [n.op_type for n in onnx.load(str(outcome.path)).graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    held_out_fp32 = task_outputs(load_session(fp32), test).argmax(1)
    held_out_int8 = task_outputs(load_session(resolve_model(str(outcome.path))), test).argmax(1)
    assert (held_out_fp32 == held_out_int8).mean() >= 0.9
    assert abs((held_out_fp32 == test.labels).mean() - (held_out_int8 == test.labels).mean()) < 0.03


def test_two_models_quantized_into_one_folder_each_get_their_own_weights(trained_onnx, tmp_path):
    """Bug: ORT's pre-pass output (fp32.pre.onnx beside the output) was reused whenever it existed, so the
    second model quantized into a folder silently came out with the first one's weights."""
    fp32 = resolve_model(str(trained_onnx))
    spec, test = fp32.spec, load_split("edgemm-digits", "test")
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(64).for_inputs(spec.input_names))
    other = onnx.load(str(trained_onnx))
    for tensor in other.graph.initializer:  # the same graph with other weights: every float tensor negated
        if tensor.data_type == onnx.TensorProto.FLOAT:
            tensor.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(tensor), tensor.name))
    save_onnx(other, spec, tmp_path / "other.onnx")
    ort, work = QUANTIZERS.get("ort"), tmp_path / "work"
    work.mkdir()
    for name, source in (("first", trained_onnx), ("second", tmp_path / "other.onnx")):
        ort.quantize(Path(source), work / f"{name}.int8.onnx", feeds, X86, _ort_config(), [])
    outputs = {name: task_outputs(load_session(resolve_model(str(path))), test)
               for name, path in (("second fp32", tmp_path / "other.onnx"), ("first int8", work / "first.int8.onnx"),
                                  ("second int8", work / "second.int8.onnx"))}
    assert np.abs(outputs["second int8"] - outputs["second fp32"]).max() < 0.5 * np.abs(outputs["second fp32"]).max()
    assert not np.allclose(outputs["second int8"], outputs["first int8"])


def _int8_nodes(path: Path) -> set[str]:
    """Conv/MatMul/Gemm nodes reading a DequantizeLinear output."""
    model = onnx.load(str(path))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and dequantized & set(n.input)}


def _quantized_towers(path: Path) -> set[str]:
    """Towers with at least one int8 Conv/MatMul/Gemm."""
    towers = node_towers(onnx.load(str(path)))
    return {towers[name] for name in _int8_nodes(path)}


# How much accuracy quantizing each tower costs, in this test's stand-in evaluator.
PENALTY = {"text": 0.10, "image": 0.03, "audio": 0.01, FUSION: 0.0}


def _tower_sensitive_accuracy(path: Path) -> float:
    return 0.90 - sum(PENALTY[t] for t in _quantized_towers(path))


# What quantizing each tower saves, in ms, in this test's stand-in timer: audio's int8 costs time (its Q/DQ
# transitions outweigh its small convs), the fusion head's saves too little to matter.
SAVING = {"text": 0.5, "image": 0.8, "audio": -0.3, FUSION: 0.02}


def _planted_ms(path: Path) -> float:
    return 10.0 - sum(SAVING[t] for t in _quantized_towers(path))


def test_speed_fallback_keeps_int8_only_where_it_pays(fallback_inputs, tmp_path):
    from edgemm.compress.speed import SpeedSettings, keep_int8_where_it_pays
    from edgemm.models.graph_towers import nodes_by_tower

    fp32, feeds = fallback_inputs
    ort, config = QUANTIZERS.get("ort"), _ort_config()
    outcome = _fallback(fp32, tmp_path, feeds, lambda _p: 1.0, 0.0)  # every tower int8 passes the gate
    assert _quantized_towers(outcome.path) == {"text", "image", "audio", FUSION}
    groups = nodes_by_tower(onnx.load(str(ort.prepare(fp32, tmp_path))), X86.op_types)

    def quantize(out: Path, keep_float: list[str]) -> Path:
        return ort.quantize(fp32, out, feeds, X86, config, keep_float)

    path, kept, decisions = keep_int8_where_it_pays(outcome.path, outcome.kept_float, groups, quantize, tmp_path,
                                                    SpeedSettings(), lambda a, b: (_planted_ms(a), _planted_ms(b)))
    assert {d.tower: d.kept for d in decisions} == {"text": "int8", "image": "int8", "audio": "float", FUSION: "float"}
    assert _quantized_towers(path) == {"text", "image"} and set(groups["audio"]) <= set(kept)
    audio = next(d for d in decisions if d.tower == "audio")
    assert audio.float_ms == pytest.approx(audio.int8_ms - 0.3) and audio.speedup < 1


@pytest.fixture
def fallback_inputs(trained_onnx, tmp_path):
    spec = resolve_model(str(trained_onnx)).spec
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(64).for_inputs(spec.input_names))
    shutil.copy(trained_onnx, tmp_path / "fp32.onnx")
    return tmp_path / "fp32.onnx", feeds


def test_fallback_keeps_the_most_sensitive_tower_in_float_first(fallback_inputs, tmp_path):
    fp32, feeds = fallback_inputs
    outcome = _fallback(fp32, tmp_path, feeds, _tower_sensitive_accuracy, 0.85, max_tries=3, granularity=["tower"])
    assert outcome.sensitivity == pytest.approx({"text": 0.10, "image": 0.03, "audio": 0.01, FUSION: 0.0})
    tries = [a for a in outcome.attempts if a.kind == "try"]
    assert [a.label for a in tries] == ["quantize all", "keep tower text in float"]  # the costliest goes first
    assert outcome.accuracy == pytest.approx(0.86) and _quantized_towers(outcome.path) == {"image", "audio", FUSION}


@pytest.mark.parametrize("granularity, retreat", [("tower", "keep tower"), ("node", "keep nodes")])
def test_fallback_fails_loudly_when_the_gate_stays_out_of_reach(fallback_inputs, tmp_path, granularity, retreat):
    """An unreachable gate: parts are kept in float try by try, then it raises instead of returning a model."""
    fp32, feeds = fallback_inputs
    def evaluate(path: Path) -> float:  # float 96 %: the gate is reachable in float, not with any tower int8
        return _tower_sensitive_accuracy(path) + 0.06 - (0.01 if _quantized_towers(path) else 0.0)

    with pytest.raises(GateFailed, match=rf"misses its accuracy gate.*after 3 tries.*{retreat}") as err:
        _fallback(fp32, tmp_path, feeds, evaluate, 0.955, max_tries=2, granularity=[granularity])
    assert "quantize all → 81.00 %" in str(err.value)


def test_node_fallback_keeps_nodes_of_the_tower_that_loses_accuracy(fallback_inputs, tmp_path):
    """Only the image tower's int8 costs accuracy here. The error ranking is global: it named the real model's
    MiniLM MatMuls first while the loss was its image tower's, and four tries of them changed nothing."""
    fp32, feeds = fallback_inputs
    groups = nodes_by_tower(onnx.load(str(QUANTIZERS.get("ort").prepare(fp32, tmp_path))), X86.op_types)

    def evaluate(path: Path) -> float:  # every image node still int8 costs a point
        quantized = _int8_nodes(path)
        return 0.95 - 0.01 * len(quantized & set(groups["image"]))

    outcome = _fallback(fp32, tmp_path, feeds, evaluate, 0.95 - 0.01 * (len(groups["image"]) - 2),
                        max_tries=4, granularity=["node"], nodes_per_try=1)
    assert outcome.sensitivity["image"] > 0 and outcome.sensitivity["text"] == 0
    assert outcome.kept_float and set(outcome.kept_float) <= set(groups["image"])


def test_a_one_tower_placement_that_passed_while_measuring_is_kept(fallback_inputs, tmp_path):
    """On the real model each tower alone was lossless in int8 and all of them together were not: the node retreat
    failed, and the run failed with 'best 84.55 % < required 84.09 %' although a measured placement had passed."""
    fp32, feeds = fallback_inputs

    def evaluate(path: Path) -> float:
        return 0.95 if len(_quantized_towers(path)) <= 1 else 0.90

    outcome = _fallback(fp32, tmp_path, feeds, evaluate, 0.94, max_tries=1, granularity=["node"])
    assert outcome.accuracy == 0.95 and len(_quantized_towers(outcome.path)) == 1
    chosen = [a for a in outcome.attempts if a.kind == "sensitivity" and a.kept_float == outcome.kept_float]
    assert chosen and chosen[0].passed and not _int8_nodes(outcome.path) & set(outcome.kept_float)


def test_fallback_says_when_the_loss_is_upstream(fallback_inputs, tmp_path):
    """The float model already misses the gate: no int8 placement can help, so it says where to look."""
    fp32, feeds = fallback_inputs
    with pytest.raises(GateFailed, match="float model entering quantize already misses the gate: 90.00 %") as err:
        _fallback(fp32, tmp_path, feeds, _tower_sensitive_accuracy, 0.95, max_tries=2, granularity=["tower"])
    assert "prune or resize less" in err.value.hint and "max_tries" not in err.value.hint


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
    ("name: r\nstages:\n  - stage: shrink\n", "stages.0: unknown stage; registered: .*quantize .*\\(got 'shrink'\\)"),
    ("name: r\nstages:\n  - stage: quantize\n    backend: tpu\n",
     "stages.0.quantize: unknown quantize backend; registered: .*ort.* \\(got 'tpu'\\)"),
    ("name: r\nstages:\n  - stage: quantize\n    backend: fp16\n    mode: dynamic\n",
     "stages.0.quantize.fp16.mode: Extra inputs"),
    ("name: r\ngates:\n  max_accuracy_drop: lots\nstages:\n  - stage: quantize\n", "gates.max_accuracy_drop"),
    ("name: r\ncolour: red\nstages:\n  - stage: quantize\n", "colour: Extra inputs"),
    ("name: r\nstages:\n  - stage: quantize\n  - stage: prune\n",
     "stage 1 \\(prune\\) needs a PyTorch model, but quantize before it produces ONNX: put quantize last"),
    ("name: r\nstages: []\n", "stages: List should have at least 1 item"),
])
def test_bad_recipes_name_the_key(tmp_path, yaml_text, message):
    (tmp_path / "r.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(tmp_path / "r.yaml")


def test_a_recipe_may_write_ablation_off_unquoted(tmp_path):
    """YAML 1.1 reads a bare off (or no, false) as the boolean false: it means the setting called "off"."""
    (tmp_path / "r.yaml").write_text("name: r\ngates:\n  ablation: off\nstages:\n  - stage: quantize\n")
    assert load_recipe(tmp_path / "r.yaml").gates.ablation == "off"


def test_torch_side_quantizer_may_follow_pruning():
    """INC quantizes the PyTorch model: after prune it is valid; the planner adds no export before it."""
    from edgemm.compress.runner import plan

    recipe = recipe_model().model_validate({"name": "r", "stages": [{"stage": "prune"},
                                                                    {"stage": "quantize", "backend": "inc"}]})
    assert [name for name, _ in plan(recipe)] == ["prune", "quantize"]
    ort = recipe_model().model_validate({"name": "r", "stages": [{"stage": "prune"}, {"stage": "quantize"}]})
    assert [name for name, _ in plan(ort)] == ["prune", "export", "quantize"]


def _recipe(stages=("prune", "distill", "quantize"), **gates):
    """A quick recipe; the accuracy gate is loose because these tests check the plumbing, not the numbers."""
    configs = {"prune": {"stage": "prune", "ratio": 0.3}, "distill": {"stage": "distill", "epochs": 1, "max_steps": 30},
               "quantize": {"stage": "quantize", "calibration_samples": 128, "speed": {"enabled": False}}}
    return recipe_model().model_validate({
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
    assert not (tmp_path / "02-prune" / "in_progress.json").exists()
    report_md = (tmp_path / "report.md").read_text()
    assert "| (c) compressed: small | ort-cpu |" in report_md and "| (a) torch fp32 eager | torch |" in report_md
    paired = manifest["metrics"]["gates"]["paired"]  # the gate's drop, per sample of the val split
    assert paired["samples"] == len(load_split("edgemm-digits", "val"))
    assert paired["drop_points"] == pytest.approx(100 * (result.gates["reference_accuracy"] - result.gates["final_accuracy"]))
    assert f"{paired['worse']} of {paired['samples']} samples got worse" in report_md
    ablation = manifest["metrics"]["gates"]["ablation"]  # the val split again with each tower blanked
    assert set(ablation) == {"image", "audio", "text"} and "| tower blanked |" in report_md
    assert all(row["reference"] < result.gates["reference_accuracy"] for row in ablation.values())
    final = resolve_model(str(result.final))
    assert final.spec == resolve_model(trained_demo).spec  # deployable artifact carries the contract
    logs.clear()
    compress(str(trained_demo), _recipe(), tmp_path, batch_sizes=(1,), timing=FAST, log=logs.append)
    assert sum("unchanged inputs, reusing" in line for line in logs) == 5  # reference export + 4 stages


def test_distillation_resumes_inside_compress_after_an_interruption(tmp_path):
    """Bug: the stage folder, checkpoint included, was deleted before the checkpoint was handed to distill."""
    recipe = recipe_model().model_validate({
        "name": "distil", "gates": {"max_accuracy_drop": 100},
        "stages": [{"stage": "distill", "epochs": 2, "batch_size": 500, "patience": 5}]})  # 8 steps an epoch

    def interrupt_in_epoch_two(task: str, done: int, _total: int) -> None:
        if task == "distill" and done == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress("demo-text-only", recipe, tmp_path, batch_sizes=(1,), timing=FAST, log=lambda _m: None,
                 progress=interrupt_in_epoch_two)
    assert json.loads((tmp_path / "02-distill" / "checkpoint" / "checkpoint.json").read_text())["epoch"] == 1
    assert not (tmp_path / "02-distill" / "manifest.json").exists() and not (tmp_path / "final").exists()
    logs: list[str] = []
    result = compress("demo-text-only", recipe, tmp_path, batch_sizes=(1,), timing=FAST, log=logs.append)
    distilled = next(s for s in result.stages if s["stage"] == "distill")
    assert distilled["resumed_from_epoch"] == 1 and distilled["epochs"] == 2
    assert any("02-distill: resuming an interrupted run" in line for line in logs)
    assert not (tmp_path / "02-distill" / "checkpoint").exists()  # scratch, gone once the stage is complete


def test_inc_backend_quantizes_the_torch_model_to_onnx_qdq(trained_demo, tmp_path):
    pytest.importorskip("neural_compressor", reason="INC is the optional 'inc' extra")
    recipe = recipe_model().model_validate({"name": "inc", "gates": {"max_accuracy_drop": 15.0},
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
    quantizer = QUANTIZERS.get(backend, usable=False)
    if quantizer.unavailable_reason():
        pytest.skip(f"{backend}: {quantizer.unavailable_reason()}")
    spec = resolve_model(str(trained_onnx)).spec
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(64).for_inputs(spec.input_names))
    out = quantizer.quantize(trained_onnx, tmp_path / "q.onnx", feeds, load_profile("tensorrt-gpu").quantization,
                             quantizer.config(stage="quantize", backend=backend), [])
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


def _distill_config() -> DistillConfig:
    return DistillConfig(stage="distill", epochs=1, max_steps=2, batch_size=32)


def test_a_stage_past_the_budget_with_nothing_to_recover_it_stops_the_run(trained_demo, tmp_path):
    """Prune hard, then only quantize: after prune no stage trains, so the run stops there with a prune fix
    (before, it went on to quantize and blamed the int8 fallback)."""
    recipe = recipe_model().model_validate({"name": "hard", "gates": {"max_accuracy_drop": 1.0}, "stages": [
        {"stage": "prune", "ratio": 0.9, "prune_heads": False}, {"stage": "quantize", "calibration_samples": 32}]})
    with pytest.raises(GateFailed, match="stage 02-prune dropped val accuracy by .* no later stage trains") as err:
        compress(str(trained_demo), recipe, tmp_path, batch_sizes=(1,), log=lambda _m: None)
    assert "prune less" in err.value.hint
    assert not (tmp_path / "03-quantize").exists() and not (tmp_path / "final").exists()
    assert json.loads((tmp_path / "gate_report.json").read_text())["failed_stage"] == "02-prune"
    # The same recipe again: the finished prune is reused, and its gate still stops the run.
    logged = []
    with pytest.raises(GateFailed, match="stage 02-prune dropped val accuracy"):
        compress(str(trained_demo), recipe, tmp_path, batch_sizes=(1,), log=logged.append)
    assert "02-prune: unchanged inputs, reusing" in logged and not (tmp_path / "final").exists()
    # Gated on another split, the reused prune is scored on that split (not judged by its val figure).
    on_test = recipe.model_copy(update={"gates": recipe.gates.model_copy(update={"split": "test"})})
    with pytest.raises(GateFailed, match="stage 02-prune dropped test accuracy") as err:
        compress(str(trained_demo), on_test, tmp_path, batch_sizes=(1,), log=lambda _m: None)
    test = load_split("edgemm-digits", "test")
    drop = 100 * (accuracy(load_session(resolve_model(str(trained_demo))), test)
                  - accuracy(load_session(resolve_model(str(tmp_path / "02-prune"))), test))
    assert f"by {drop:.2f} points" in str(err.value)
    # A recipe that distils after it reuses that prune (a gate failure used to leave no manifest: redone).
    logged.clear()
    recovering = recipe.model_copy(update={"stages": [recipe.stages[0], _distill_config(), recipe.stages[1]]})
    with pytest.raises(GateFailed):  # two steps of distillation do not win 90 % pruning back
        compress(str(trained_demo), recovering, tmp_path, batch_sizes=(1,), log=logged.append)
    assert "02-prune: unchanged inputs, reusing" in logged and "03-distill: running" in logged
    # with distillation after it, the same prune is not judged yet: distill may win accuracy back
    from edgemm.compress.runner import plan, stage_budgets
    with_distill = recipe_model().model_validate({"name": "d", "stages": [
        {"stage": "prune"}, {"stage": "distill"}, {"stage": "quantize"}]})
    assert stage_budgets(plan(with_distill)) == [False, True, True, True]  # prune | distill, export, quantize


@pytest.mark.parametrize("batches, expected", [(8, 3), (7, 2), (12, 5), (2, None), (1, None)])
def test_calibration_memory_bound_never_divides_the_batch_count(batches, expected):
    """onnxruntime raised "No data is collected" when the bound divided the batch count (8 batches, bound 2)."""
    from edgemm.compress.quantizers.ort import batches_in_memory
    assert batches_in_memory(batches) == expected


def test_node_ranking_probes_a_bounded_sample():
    """The per-node error ranking keeps every activation of two models in memory: it sees 16 samples, not 4
    calibration batches (a 26 M-parameter model's run reached 23 GB that way)."""
    from edgemm.compress.fallback import PROBE_SAMPLES, probe_feeds
    feeds = [{"image": np.zeros((32, 3, 8, 8), np.float32), "text": np.zeros((32, 5), np.int64)}] * 4
    probe = probe_feeds(feeds)
    assert len(probe) == 1 and {k: v.shape[0] for k, v in probe[0].items()} == {"image": PROBE_SAMPLES, "text": PROBE_SAMPLES}


def test_histogram_calibration_sees_a_bounded_sample(monkeypatch, tmp_path):
    """Percentile/entropy calibrators hold every activation of every batch (256 samples of a 224x224 model passed
    18 GB): they are handed the first HISTOGRAM_SAMPLES samples; min-max streams and gets them all."""
    from edgemm.compress.quantizers import ort
    seen = {}

    def record(source, out, reader, **kwargs):
        seen["batches"] = sum(1 for _ in iter(reader.get_next, None))

    import onnxruntime.quantization  # the real module behind edgemm's lazy import
    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", record)
    feeds = [{"x": np.zeros((32, 4), np.float32)}] * 8
    config = ort.OrtQuantizeConfig(stage="quantize")
    for method, batches in (("percentile", ort.HISTOGRAM_SAMPLES // 32), ("minmax", 8)):
        scheme = load_profile("x86-cpu").quantization.model_copy(update={"calibration_method": method})
        ort.OrtQuantizer.quantize_static(tmp_path / "in.onnx", tmp_path / "out.onnx", feeds, scheme, config, [])
        assert seen["batches"] == batches


@pytest.mark.parametrize("flags, machine, setting, expected", [
    ({"avx2"}, "x86_64", "auto", True),  # AVX2 EPYC: u8 x s8 pairs saturate int16 -> 7-bit weights
    ({"avx2", "avx512_vnni"}, "x86_64", "auto", False),
    ({"asimd"}, "aarch64", "auto", False),
    ({"avx2"}, "x86_64", False, False),  # the TensorRT profile says false: its int8 runs on the GPU
])
def test_reduce_range_follows_the_quantizing_cpu(monkeypatch, flags, machine, setting, expected):
    from edgemm import environment
    monkeypatch.setattr(environment, "cpu_flags", lambda: flags)
    monkeypatch.setattr(environment.platform, "machine", lambda: machine)
    scheme = load_profile("x86-cpu").quantization.model_copy(update={"reduce_range": setting})
    assert scheme.reduces_range() is expected
    assert load_profile("tensorrt-gpu").quantization.reduces_range() is False


def test_reports_name_the_int8_extension_two_cpus_of_one_name_differ_in(monkeypatch):
    from edgemm import environment
    assert [environment.vector_isa(f) for f in ({"avx2"}, {"avx2", "avx512f", "avx512_vnni"}, {"avx_vnni", "avx2"},
                                                 {"asimd"})] == ["AVX2, no VNNI", "AVX-512 VNNI", "AVX-VNNI", None]
    monkeypatch.setattr(environment, "cpu_flags", lambda: {"avx2"})
    assert "(2 cores, 1 thread(s), AVX2, no VNNI)" in environment.describe(
        {**environment.machine_info(1), "logical_cores": 2})


def test_compress_for_a_jetson_gives_a_graph_tensorrt_takes(trained_demo, tmp_path):
    """--profile replaces the recipe's target: the quantize stage then uses the Jetson's symmetric int8 scheme,
    and the final graph passes the TensorRT check that the x86 scheme (uint8, asymmetric) fails."""
    from edgemm.api import inspect

    result = compress(str(trained_demo), _recipe(stages=("quantize",)), tmp_path, batch_sizes=(1,), timing=FAST,
                      log=lambda _m: None, profile="jetson-orin-nano")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["recipe"]["target"] == "jetson-orin-nano"
    assert not inspect(result.final, profile="jetson-orin-nano").errors


def test_a_gate_finer_than_two_samples_of_its_split_is_flagged_as_noise():
    from edgemm.compress.gates import Gates

    warning = Gates(max_accuracy_drop=1.0).resolution_warning(110)  # the Tux Paint val split
    assert "110 samples" in warning and "0.91 accuracy points" in warning and "at least 1.9" in warning  # 2 samples: 1.82
    assert Gates(max_accuracy_drop=1.0).resolution_warning(1000) is None
    relative = Gates(max_accuracy_drop=None, max_relative_drop=0.01).resolution_warning(110)  # <= 1 point
    assert "gates.max_relative_drop" in relative and "at least 0.019" in relative
    assert Gates(max_accuracy_drop=5.0, max_relative_drop=0.05).resolution_warning(110) is None



def _paired(n: int, worse: int, better: int):
    reference = np.ones(n, bool)
    reference[n - better:] = False  # the samples that will get better start wrong
    final = reference.copy()
    final[:worse], final[n - better:] = False, True
    return reference, final


def test_the_gates_drop_comes_with_what_it_rests_on():
    from edgemm.compress.gates import paired_drop

    two_worse = paired_drop(*_paired(110, worse=2, better=0))  # the Tux Paint val split, two samples lost
    assert (two_worse["worse"], two_worse["better"], two_worse["samples"]) == (2, 0, 110)
    assert two_worse["drop_points"] == pytest.approx(200 / 110)
    low, high = two_worse["drop_ci95_points"]
    assert low < 200 / 110 < high and high > 4.0  # two flips on 110 samples cannot rule out a 4-point loss
    swapped = paired_drop(*_paired(110, worse=2, better=2))
    assert swapped["drop_points"] == 0 and swapped["drop_ci95_points"][0] == -swapped["drop_ci95_points"][1] < 0
    unchanged = paired_drop(*_paired(110, worse=0, better=0))
    assert 0 < unchanged["drop_ci95_points"][1] < high  # nothing changed still bounds what 110 samples can miss
    big = paired_drop(*_paired(10_000, worse=200, better=100))
    assert big["drop_points"] == pytest.approx(1.0) and 0.5 < big["drop_ci95_points"][0] < 1.0 < big["drop_ci95_points"][1] < 1.5
    with pytest.raises(ValueError, match="one flag per sample"):
        paired_drop(np.ones(5, bool), np.ones(6, bool))


def test_a_confident_gate_fails_where_the_split_cannot_show_the_loss_is_small():
    from edgemm.compress.gates import Gates, accuracy_failures, paired_drop

    reference, final = _paired(110, worse=2, better=0)  # observed 1.82 points: within a 1.9-point budget
    paired = paired_drop(reference, final)
    args = (reference.mean(), final.mean(), paired)
    assert accuracy_failures(Gates(max_accuracy_drop=1.9), *args) == []
    [failure] = accuracy_failures(Gates(max_accuracy_drop=1.9, decision="confident"), *args)
    assert "95 % interval reaches" in failure and "2 of 110 samples got worse" in failure and "larger gate split" in failure
    reference, final = _paired(10_000, worse=60, better=40)  # 0.2 points on a split that can show it
    assert accuracy_failures(Gates(max_accuracy_drop=1.0, decision="confident"), reference.mean(), final.mean(),
                             paired_drop(reference, final)) == []
    [observed] = accuracy_failures(Gates(max_accuracy_drop=1.0, decision="confident"), 0.9, 0.85,
                                   paired_drop(*_paired(100, worse=5, better=0)))
    assert observed.startswith("val accuracy dropped 5.00 points (allowed 1.00)")


def test_a_tower_that_lost_what_another_modality_covers_is_named_and_can_fail_the_gate():
    """Measured on the real model: captions blanked, a pruned image tower scored 68.6 % on test against 86.7 %."""
    from edgemm.compress.gates import Gates, ablation_findings

    reference, final = {"image": 0.60, "text": 0.867}, {"image": 0.59, "text": 0.686}
    [warning] = ablation_findings(Gates(max_accuracy_drop=1.9), 0.019, reference, final)
    assert warning.startswith("with text blanked, val accuracy fell 18.1 points (86.7 → 68.6 %)")
    assert "lost what it knew without text" in warning and "gates.ablation: gate" in warning
    assert "text's own output for a blank input moved" in warning and "modality_dropout: {text: 0.3}" in warning
    [failure] = ablation_findings(Gates(max_accuracy_drop=1.9, ablation="gate"), 0.019, reference, final)
    assert "gates.ablation" not in failure  # as a failure it needs no hint to make it one
    assert ablation_findings(Gates(max_accuracy_drop=1.9), 0.019, reference, {"image": 0.6, "text": 0.86}) == []
    from edgemm.compress.pipeline import ablated_towers
    spec = resolve_model("demo-fusion").spec
    assert ablated_towers(Gates(), spec) == ("image", "audio", "text")
    assert ablated_towers(Gates(ablation="off"), spec) == ()
    assert ablated_towers(Gates(), resolve_model("demo-image-only").spec) == ()  # nothing left to score
    from edgemm.compress.pipeline import blanked_accuracies
    logs: list[str] = []
    scored = blanked_accuracies(("image", "text"), [None, np.array([True, False])], "input model", logs.append)
    assert scored == {"text": 0.5} and "with image blanked the input model's outputs are not finite" in logs[0]


def test_labels_that_are_not_one_column_are_refused_by_name():
    from edgemm.runtime.evaluate import correct_of
    split = load_split("edgemm-digits", "val").head(8)
    bad = type(split)(split.name, split.inputs, split.labels.reshape(-1, 1))
    with pytest.raises(InputError, match="labels of shape \\(8, 1\\)"):  # broadcast to 8x8, a silent wrong score
        correct_of(np.eye(10)[:8], bad, "m")

def test_a_held_out_split_that_lost_more_than_the_budget_is_named():
    """Measured on the real model: the val gate passed (-0.9 points) while ood lost 21.0 with the head trained."""
    from edgemm.compress.gates import Gates, held_out_warnings

    gates = Gates(max_accuracy_drop=1.9)
    reference = {"val": 0.891, "test": 0.924, "ood": 0.895}
    warnings = held_out_warnings(gates, 0.019, reference, {"val": 0.882, "test": 0.905, "ood": 0.686})
    assert len(warnings) == 1 and warnings[0].startswith("ood accuracy fell 20.9 points")  # test lost 1.9: within
    assert "gates.split" in warnings[0] and "distill.freeze" in warnings[0]
    assert held_out_warnings(gates, 0.019, reference, {"val": 0.5, "test": 0.93, "ood": 0.9}) == []  # val: the gate's


def test_speed_batches_larger_than_calibration_are_refused_with_the_fix():
    with pytest.raises(pydantic.ValidationError, match="speed.batch_sizes times batch 16.*calibration_samples is 8"):
        _ort_config(calibration_samples=8, speed={"batch_sizes": [1, 16]})


def test_speed_feeds_take_real_samples_at_each_batch_size():
    from edgemm.compress.speed import batch_feeds

    spec = resolve_model("demo-audio-only").spec  # no text input: nothing to trim
    name = spec.input_names[0]
    shape = tuple(4 if d == "batch" else spec.axes[d].opt if isinstance(d, str) else d for d in spec.input(name).shape)
    feeds = [{name: np.full(shape, i, dtype=np.float32)} for i in range(5)]  # calibration batches of 4
    one, nine = batch_feeds(feeds, [1, 9], spec)
    assert one[name].shape[0] == 1 and nine[name].shape[0] == 9
    assert nine[name].reshape(9, -1)[:, 0].tolist() == [0] * 4 + [1] * 4 + [2]  # in order, across batches
    with pytest.raises(ConfigError, match="calibration split has 20 samples"):  # not a batch of 20 named 32
        batch_feeds(feeds, [32], spec)


def test_speed_is_timed_at_the_texts_own_length_not_the_splits_padding():
    """Calibration batches pad text to the split's longest caption; a batch of one short caption runs at its
    own length, so timing the padded one overstated the text tower (25 ms vs 15 ms on the real model)."""
    from edgemm.compress.speed import batch_feeds

    spec = resolve_model("examples.own_model.model:build").spec  # image + BERT ids and mask
    mask = np.zeros((4, 12), dtype=np.int64)
    mask[0, :3] = mask[1, :5] = 1  # real tokens: 3 and 5; the rest is padding to the split's 12
    feeds = [{"pixel_values": np.zeros((4, 3, 32, 32), np.float32), "input_ids": np.ones((4, 12), np.int64),
              "attention_mask": mask}]
    one, two = batch_feeds(feeds, [1, 2], spec)
    assert one["input_ids"].shape == one["attention_mask"].shape == (1, 3) and one["pixel_values"].shape[0] == 1
    assert two["input_ids"].shape == (2, 5)


def test_speed_fallback_never_ends_slower_than_it_started(tmp_path):
    """Machine drift between one-tower comparisons can add up: when the graph the accuracy fallback returned is
    faster than the float placements together by the same margin, it is kept and every tower stays int8."""
    from edgemm.compress.speed import SpeedSettings, keep_int8_where_it_pays

    def quantize(out: Path, keep: list[str]) -> Path:
        out.write_text(",".join(keep))
        return out

    start = quantize(tmp_path / "start.onnx", [])
    answers = iter([(10.0, 9.95), (9.95, 9.9), (10.0, 10.4)])  # a: float 0.5 % faster, b: too; together: slower
    path, kept, decisions = keep_int8_where_it_pays(start, [], {"a": ["a1", "a2"], "b": ["b1"]}, quantize, tmp_path,
                                                    SpeedSettings(), lambda _a, _b: next(answers))
    assert path == start and kept == [] and [d.kept for d in decisions] == ["int8", "int8"]


def test_auto_placement_leaves_fewer_transitions_and_transformer_adds_float(trained_onnx, tmp_path):
    """On the demo (CNN image/audio towers, transformer text tower, all static int8): quantizing the small
    ops where that removes borders leaves fewer stand-alone Q/DQ after ORT's fusions than Q/DQ on
    Conv/MatMul/Gemm only; the text tower's residual Adds, between float LayerNorms, stay float."""
    from edgemm.bench.profile import profile_onnx
    from edgemm.models.registry import LoadedModel

    spec = resolve_model(str(trained_onnx)).spec
    feeds = check_calibration(spec, load_split("edgemm-digits", "train").head(64).for_inputs(spec.input_names))
    ort = QUANTIZERS.get("ort")
    graphs = {placement: ort.quantize(trained_onnx, tmp_path / f"{placement}.onnx", feeds, X86,
                                      _ort_config(placement=placement), [])
              for placement in ("narrow", "auto")}
    standalone = {name: profile_onnx(LoadedModel(spec, str(p), "onnx", onnx_path=p), feeds[0], 1, runs=2)
                  .standalone_qdq_nodes for name, p in graphs.items()}
    assert standalone["auto"] < standalone["narrow"]

    graph = onnx.load(str(graphs["auto"]))
    towers = node_towers(graph)
    quantized_outputs = {n.input[0] for n in graph.graph.node if n.op_type == "QuantizeLinear"}
    int8_adds = [n.name for n in graph.graph.node if n.op_type == "Add" and quantized_outputs & set(n.output)]
    assert not [name for name in int8_adds if towers[name] == "text"]
