"""Rows without labels: distillation learns from them (the teacher's answers are the targets), while every
place that scores accuracy refuses them by name instead of scoring -1 as a wrong class."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from edgemm.compress.recipe import recipe_model
from edgemm.compress.runner import check_recipe
from edgemm.compress.stages.distill import DistillConfig, DistillStage, distill, unlabelled_record
from edgemm.data.datasets import Split, find_source, load_split
from edgemm.data.readers import UNLABELLED
from edgemm.errors import ConfigError, InputError
from edgemm.models.registry import resolve_model
from edgemm.runtime.evaluate import correct_of
from edgemm.train import labelled_loss

OWN = "examples.own_model.model:build"
SPLITS = ("train", "val", "test", "unlabelled")


@pytest.fixture(scope="module")
def folder_with_unlabelled(tmp_path_factory):
    """The example's data folder plus 40 rows of split 'unlabelled': images with empty label and caption cells."""
    from examples.own_model.model import make_folder
    root = make_folder(tmp_path_factory.mktemp("unlabelled"), n=60)
    extra = make_folder(tmp_path_factory.mktemp("extra"), n=40, seed=1)
    with open(root / "metadata.csv", "a", newline="") as f:
        writer = csv.writer(f)
        for row in csv.DictReader(open(extra / "metadata.csv")):
            name = row["file_name"].replace("images/", "images/extra-")
            shutil.copy(extra / row["file_name"], root / name)
            writer.writerow([name, "", "", "unlabelled"])
    return root


def test_rows_without_labels_load_as_unlabelled_and_accuracy_refuses_them(folder_with_unlabelled):
    spec = resolve_model(OWN).spec
    data = str(folder_with_unlabelled)
    rows = load_split(data, "unlabelled", spec)
    assert len(rows) == 40 and (rows.labels == UNLABELLED).all()
    assert (load_split(data, "train", spec).labels >= 0).all()
    source = find_source(data)
    assert [s for s in SPLITS if source.labelled(data, s, spec)] == ["train", "val", "test"]
    with pytest.raises(InputError, match="40 of 40 rows have no label"):
        correct_of(np.zeros((40, 3), np.float32), rows, spec.name)


def test_an_npz_split_without_labels_is_unlabelled(tmp_path):
    spec = resolve_model(OWN).spec
    feed = spec.example_inputs({"batch": 4, "seq": 6})
    path = tmp_path / "d.npz"
    np.savez(path, **{f"test/{k}": v for k, v in feed.items()}, **{"test/labels": np.arange(4) % 3},
             **{f"pool/{k}": v for k, v in feed.items()})
    source = find_source(str(path))
    assert source.splits_for(str(path)) == ("pool", "test")
    assert source.labelled(str(path), "test") and not source.labelled(str(path), "pool")
    assert (load_split(str(path), "pool", spec).labels == UNLABELLED).all()
    with pytest.raises(ConfigError, match="has no split 'val'"):
        load_split(str(path), "val", spec)


def test_a_batch_without_labels_adds_no_task_loss_and_no_nan():
    logits = torch.randn(4, 3, requires_grad=True)
    none = torch.full((4,), UNLABELLED)
    loss = labelled_loss(logits, none)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
    mixed = torch.tensor([0, UNLABELLED, 2, UNLABELLED])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 2]))
    assert torch.isclose(labelled_loss(logits, mixed), expected)


def test_splits_of_different_caption_lengths_join_padded_with_the_empty_value():
    spec = resolve_model(OWN).spec
    ids = next(i for i in spec.inputs if i.vocab_size)
    short = {i.name: np.ones((2, 3), np.int64) if i.modality == "text" else np.zeros((2, *i.shape[1:]), np.float32)
             for i in spec.inputs}
    long = {i.name: np.ones((1, 5), np.int64) if i.modality == "text" else np.zeros((1, *i.shape[1:]), np.float32)
            for i in spec.inputs}
    joined = Split("train", short, np.zeros(2, np.int64)).joined(Split("u", long, np.full(1, UNLABELLED)), spec)
    assert joined.inputs[ids.name].shape == (3, 5) and (joined.inputs[ids.name][:2, 3:] == ids.pad_id).all()
    assert joined.labels.tolist() == [0, 0, UNLABELLED]


def test_distill_learns_from_unlabelled_rows_with_the_caption_blanked(folder_with_unlabelled):
    teacher, student = resolve_model(OWN), resolve_model(OWN)
    torch.nn.init.normal_(student.module.classifier[0].weight)  # a student with something to learn
    before = {k: v.clone() for k, v in student.module.state_dict().items()}
    data = str(folder_with_unlabelled)
    totals = []
    config = DistillConfig(stage="distill", epochs=1, batch_size=16, unlabelled_split="unlabelled",
                           unlabelled_blank=["text"], unlabelled_samples=30)
    distill(student, teacher, config, data=data, progress=lambda done, total, _m: totals.append(total))
    train = len(load_split(data, "train", student.spec))
    assert totals and totals[-1] == -(-(train + 30) // 16)  # every step of an epoch over train + 30 unlabelled rows
    assert all(torch.isfinite(p).all() for p in student.module.parameters())
    assert any(not torch.equal(before[k], v) for k, v in student.module.state_dict().items())
    record = unlabelled_record(config, data)["unlabelled"]
    assert record["data"] == data and record["split"] == "unlabelled" and len(record["fingerprint"]) > 8


def test_unlabelled_settings_are_checked_before_any_stage(folder_with_unlabelled):
    model = resolve_model(OWN)
    data = str(folder_with_unlabelled)

    def check(**distill_keys):
        recipe = recipe_model().model_validate({"name": "u", "stages": [{"stage": "distill", **distill_keys}]})
        check_recipe(recipe, data, SPLITS, model.spec, model.module)

    check(unlabelled_split="unlabelled", unlabelled_blank=["text"])  # as it should be: no error
    with pytest.raises(ConfigError, match="no split 'extra'"):
        check(unlabelled_split="extra")
    with pytest.raises(ConfigError, match="unlabelled_blank names \\['caption'\\]: not a tower"):
        check(unlabelled_split="unlabelled", unlabelled_blank=["caption"])
    with pytest.raises(ConfigError, match="unlabelled data .* has no split 'unlabelled'"):
        DistillStage().check_usable(DistillConfig(stage="distill", unlabelled_split="unlabelled",
                                                  unlabelled_data="edgemm-digits"))


def test_compress_refuses_to_gate_on_a_split_without_labels(folder_with_unlabelled, tmp_path):
    from edgemm import api
    recipe = recipe_model().model_validate({"name": "u", "gates": {"split": "unlabelled"}, "stages": [
        {"stage": "quantize", "calibration_samples": 8}]})
    with pytest.raises(InputError, match="split 'unlabelled' .* has rows without a label"):
        api.compress(OWN, recipe, tmp_path / "c", data=str(folder_with_unlabelled), batch_sizes=(1,),
                     log=lambda _m: None)
    assert not (tmp_path / "c" / "final").exists()
