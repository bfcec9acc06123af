"""Towers from the model's behaviour, and the stages that read them: pruning keeps tower outputs and
the head at their width and removes whole Hugging Face attention heads; distillation can freeze
pretrained towers; a stage that misses the budget with nothing left to recover it stops the run."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgemm.compress.stages.distill import DistillConfig, distill
from edgemm.compress.stages.prune import PruneConfig, prune
from edgemm.models.graph_towers import node_towers
from edgemm.errors import ConfigError
from edgemm.export.profiles import load_profile
from edgemm.export.targets.onnx import export_onnx
from edgemm.models.registry import resolve_model, save_model
from edgemm.models.tower_map import FUSION, trace_towers

from .conftest import OWN


def test_towers_are_traced_from_inputs_not_names():
    model = resolve_model(OWN)
    towers = trace_towers(model.module, model.spec)
    # input_ids + attention_mask are one tower because the contract says so; the classifier fuses
    assert towers.roots == {"pixel_values": ["vision"], "text": ["bert"]}
    assert towers.owner["bert.encoder.layer.1.attention.self.query"] == "text"
    assert towers.owner["bert.embeddings.position_embeddings"] == "text"  # constant output: its enclosing tower
    assert towers.owner["classifier.0"] == FUSION and towers.owner["vision.8"] == "pixel_values"


def test_onnx_nodes_follow_the_contracts_towers(tiny_own_onnx):
    spec = resolve_model(str(tiny_own_onnx)).spec
    graph = onnx.load(str(tiny_own_onnx))
    matmuls = [n.name for n in graph.graph.node if n.op_type == "MatMul"]
    by_input = node_towers(graph)
    by_tower = node_towers(graph, {i.name: i.tower_name for i in spec.inputs})
    # ids and mask meet inside BERT: read by input name, its MatMuls looked like fusion and int8 skipped them
    assert {by_input[n] for n in matmuls} == {FUSION}
    text = [n for n in matmuls if by_tower[n] == "text"]
    assert len(text) >= 8 and {by_tower[n] for n in matmuls} <= {"text", "pixel_values", FUSION}


@pytest.fixture(scope="module")
def tiny_own_onnx(tmp_path_factory):
    return export_onnx(resolve_model(OWN), tmp_path_factory.mktemp("own_onnx"), load_profile("x86-cpu")).path


def test_head_aware_pruning_of_a_bert_tower_keeps_shapes_and_exports(tmp_path):
    model = resolve_model(OWN)
    feed = model.spec.example_inputs({"batch": 3, "seq": 7})
    metrics = prune(model, PruneConfig(stage="prune", ratio=0.5, head_ratio=0.5), round_to=None)
    assert (metrics["heads_before"], metrics["heads_after"]) == (8, 4)
    attention = model.module.bert.encoder.layer[0].attention.self
    assert attention.num_attention_heads == 2 and attention.query.out_features == 2 * attention.attention_head_size
    # tower outputs and the head keep their width: the classifier still reads 32 + 32 features
    assert model.module.classifier[0].in_features == 64 and model.module.classifier[0].out_features == 32
    assert model.module.vision[8].out_features == 32 and metrics["parameters_after"] < metrics["parameters_before"]
    save_model(model, tmp_path / "pruned")
    reloaded = resolve_model(str(tmp_path / "pruned"))  # replayed, heads included, not unpickled
    assert reloaded.module.bert.encoder.layer[1].attention.self.num_attention_heads == 2
    with torch.no_grad():
        expected = model.module(**{k: torch.from_numpy(v) for k, v in feed.items()})
        again = reloaded.module(**{k: torch.from_numpy(v) for k, v in feed.items()})
    assert torch.allclose(expected, again)
    exported = export_onnx(reloaded, tmp_path / "onnx", load_profile("x86-cpu"))
    assert exported.validation.passed


def test_dropping_transformer_layers_replays_from_the_record_and_exports(tmp_path):
    model = resolve_model(OWN)
    feed = {k: torch.from_numpy(v) for k, v in model.spec.example_inputs({"batch": 3, "seq": 7}).items()}
    second = model.module.bert.encoder.layer[1].output.dense.weight.clone()
    metrics = prune(model, PruneConfig(stage="prune", ratio=0.0, drop_layers={"text": 0.5}), round_to=None)
    assert metrics["layers_kept"] == {"bert.encoder.layer": [0]} and len(model.module.bert.encoder.layer) == 1
    assert metrics["parameters_after"] < metrics["parameters_before"]
    assert not any(torch.equal(second, p) for p in model.module.parameters())  # layer 1 is gone, not renamed
    save_model(model, tmp_path / "dropped")
    reloaded = resolve_model(str(tmp_path / "dropped"))  # a fresh build of 2 layers, cut to the recorded 1
    assert len(reloaded.module.bert.encoder.layer) == 1
    with torch.no_grad():
        assert torch.allclose(model.module(**feed), reloaded.module(**feed))
    assert export_onnx(reloaded, tmp_path / "onnx", load_profile("x86-cpu")).validation.passed


def test_layer_stacks_are_the_innermost_lists_of_attention_blocks():
    """Swin-like nesting: a list of stages, each a list of blocks. Dropping a stage would break the
    downsampling between stages, so only the blocks inside each stage are layer stacks."""
    from edgemm.compress.stages.prune import _layer_stacks

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.num_heads = torch.nn.Linear(8, 24), 2

    class Stage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Attention(), Attention()])

    stages = torch.nn.ModuleList([Stage(), Stage()])
    found = _layer_stacks(torch.nn.Sequential(stages))
    assert len(found) == 2 and all(s is stage.blocks for s, stage in zip(found, stages))


def test_an_empty_module_list_records_no_length():
    from edgemm.models.structure import record_structure

    model = torch.nn.Module()
    model.empty, model.full = torch.nn.ModuleList(), torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU()])
    record = record_structure(model)
    assert "empty" not in record and record["full"] == {"length": 2}


def test_dropping_layers_of_a_tower_without_any_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="'pixel_values' has no stack of transformer layers"):
        prune(resolve_model(OWN), PruneConfig(stage="prune", drop_layers={"pixel_values": 0.5}), round_to=None)


def test_distill_with_frozen_towers_leaves_them_bit_identical(own_folder):
    teacher, student = resolve_model(OWN), resolve_model(OWN)
    prune(student, PruneConfig(stage="prune", ratio=0.3, towers={"text": 0.0}), round_to=None)
    before = {k: v.clone() for k, v in student.module.state_dict().items()}
    config = DistillConfig(stage="distill", epochs=2, batch_size=16, freeze=["text", FUSION], feature_weight=0.1)
    result = distill(student, teacher, config, data=str(own_folder))
    after = student.module.state_dict()
    kept = [k for k in before if k.startswith(("bert.", "classifier."))]  # the text tower and the head
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)  # weights and buffers alike
    moved = [k for k in before if k.startswith("vision.") and not torch.equal(before[k], after[k])]
    assert moved or result.best_epoch == 0  # the rest trained (unless no epoch beat the input)
    from edgemm.compress.recipe import recipe_model
    from edgemm.compress.runner import check_recipe
    recipe = recipe_model().model_validate({"name": "image-only", "stages": [
        {"stage": "distill", "freeze": ["text", FUSION], "tower_lr": {FUSION: 1e-4}}]})
    check_recipe(recipe, str(own_folder), ("train", "val", "test"), student.spec, student.module)  # as compress does



def test_distill_with_the_text_tower_dropped_in_half_the_samples_trains_and_names_only_towers(own_folder):
    """ids and mask blanked together reach a BERT-like tower as an all-padding caption: the loss stays finite."""
    from edgemm.compress.recipe import recipe_model
    from edgemm.compress.runner import check_recipe
    teacher, student = resolve_model(OWN), resolve_model(OWN)
    config = DistillConfig(stage="distill", epochs=1, batch_size=16, modality_dropout={"text": 0.5})
    result = distill(student, teacher, config, data=str(own_folder))
    assert all(torch.isfinite(p).all() for p in student.module.parameters())
    assert result.history and all(h["val_accuracy"] == h["val_accuracy"] for h in result.history)  # no NaN
    for bad in ("txt", FUSION):  # the head has no inputs to blank
        recipe = recipe_model().model_validate({"name": "d", "stages": [
            {"stage": "distill", "modality_dropout": {bad: 0.3}}]})
        with pytest.raises(ConfigError, match=f"modality_dropout names \\['{bad}'\\]: not a tower of model"):
            check_recipe(recipe, str(own_folder), ("train", "val", "test"), student.spec, student.module)
    with pytest.raises(ValueError, match="less than 1"):
        DistillConfig(stage="distill", modality_dropout={"text": 1.0})

def test_distill_never_hands_on_weights_worse_than_its_input(own_folder):
    """A learning rate that wrecks a trained model: no epoch beats the input, so the input comes back."""
    from edgemm.data.datasets import load_split
    from edgemm.train import TrainConfig, train_classifier
    teacher = resolve_model(OWN)
    train, val = (load_split(str(own_folder), s, teacher.spec) for s in ("train", "val"))
    train_classifier(teacher.module, teacher.spec, train, val, TrainConfig(epochs=6, batch_size=16, lr=3e-3))
    student = resolve_model(OWN)
    student.module.load_state_dict(teacher.module.state_dict())
    before = {k: v.clone() for k, v in student.module.state_dict().items()}
    result = distill(student, teacher, DistillConfig(stage="distill", epochs=2, batch_size=8, lr=30.0),
                     data=str(own_folder))
    assert result.input_val_accuracy > 0.6 and max(h["val_accuracy"] for h in result.history) < result.input_val_accuracy
    assert result.best_epoch == 0 and result.best_val_accuracy == result.input_val_accuracy
    assert all(torch.equal(before[k], v) for k, v in student.module.state_dict().items())


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    from examples.own_model.model import make_folder
    return make_folder(tmp_path_factory.mktemp("own_folder"), n=90)


def test_int8_per_tower_static_image_dynamic_text(own_folder, tmp_path):
    """One graph: static Q/DQ in the CNN tower, dynamic int8 MatMuls in the BERT tower (both inputs of it)."""
    from edgemm import api
    from edgemm.bench.latency import TimingSettings
    from edgemm.compress.recipe import recipe_model
    recipe = recipe_model().model_validate({"name": "per-tower", "gates": {"max_accuracy_drop": 100}, "stages": [
        {"stage": "quantize", "calibration_samples": 32, "tower_modes": {"text": "dynamic"},
         "speed": {"enabled": False}}]})  # the placement itself is under test, not whether it pays here
    result = api.compress(OWN, recipe, tmp_path / "c", data=str(own_folder), batch_sizes=(1,),
                          timing=TimingSettings(warmup=1, min_iterations=3, min_seconds=0.0, rounds=1), log=lambda _m: None)
    graph = onnx.load(str(result.final))
    spec = resolve_model(str(result.final)).spec
    towers = node_towers(graph, {i.name: i.tower_name for i in spec.inputs})
    ops = {(towers[n.name], n.op_type) for n in graph.graph.node}
    assert ("text", "MatMulInteger") in ops and ("text", "DynamicQuantizeLinear") in ops
    assert ("pixel_values", "QuantizeLinear") in ops and ("pixel_values", "MatMulInteger") not in ops
    with pytest.raises(ConfigError, match="tower_modes names \\[.txt.\\]: not a tower of model"):  # before any stage
        bad = recipe.model_copy(update={"stages": [recipe.stages[0].model_copy(update={"tower_modes": {"txt": "dynamic"}})]})
        api.compress(OWN, bad, tmp_path / "bad", data=str(own_folder), batch_sizes=(1,), log=lambda _m: None)


def test_a_single_tower_model_keeps_its_class_count():
    """No fusion to protect the head in a one-tower model: the layer that produces the output keeps its width."""
    model = resolve_model("demo-image-only")
    prune(model, PruneConfig(stage="prune", ratio=0.5), round_to=None)
    out = model.module(torch.from_numpy(model.spec.example_inputs({"batch": 2})["image"]))
    assert out.shape == (2, 10)


class _InvertedResidual(torch.nn.Module):
    """MobileNetV2 / EfficientNet block: 1x1 expand, depthwise 3x3, 1x1 project, skip connection."""

    def __init__(self, width: int, expand: int = 4):
        super().__init__()
        hidden = width * expand
        self.expand = torch.nn.Sequential(torch.nn.Conv2d(width, hidden, 1), torch.nn.BatchNorm2d(hidden), torch.nn.ReLU6())
        self.depthwise = torch.nn.Sequential(torch.nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
                                             torch.nn.BatchNorm2d(hidden), torch.nn.ReLU6())
        self.project = torch.nn.Sequential(torch.nn.Conv2d(hidden, width, 1), torch.nn.BatchNorm2d(width))

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


def _tiny_mobilenet():
    from edgemm.models.registry import LoadedModel
    from edgemm.spec import AxisRange, InputSpec, ModelSpec, OutputSpec, TaskSpec
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), _InvertedResidual(16),
                                 _InvertedResidual(16), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(16, 3)).eval()
    spec = ModelSpec(name="tiny-mobilenet", inputs=(InputSpec(name="image", modality="image", dtype="float32",
                                                              shape=("batch", 3, 16, 16)),),
                     outputs=(OutputSpec(name="logits", shape=("batch", 3)),),
                     task=TaskSpec(kind="classification", output="logits", num_classes=3),
                     axes={"batch": AxisRange(min=1, opt=2, max=8)})
    return LoadedModel(spec, "tiny", "factory", module)


def test_keep_residual_prunes_only_inside_inverted_residual_blocks():
    kept, free = _tiny_mobilenet(), _tiny_mobilenet()
    metrics = prune(kept, PruneConfig(stage="prune", ratio=0.5, keep_residual=True), round_to=None)
    prune(free, PruneConfig(stage="prune", ratio=0.5), round_to=None)
    block = kept.module[1]
    assert block.expand[0].out_channels == 32 and block.depthwise[0].groups == 32  # expansion 64 -> 32
    assert block.project[0].out_channels == 16 and kept.module[0].out_channels == 16  # the stream keeps 16
    assert metrics["residual_groups_kept"] >= 1
    assert free.module[0].out_channels < 16  # without the option the stream itself is narrowed
    with torch.no_grad():
        assert kept.module(torch.randn(2, 3, 16, 16)).shape == (2, 3)
