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
from edgemm.compress.pipeline import labelled_report_splits
from edgemm.compress.stages.distill import DistillConfig, DistillStage, distill, unlabelled_record, unlabelled_rows
from edgemm.data.datasets import Split, find_source, load_split
from edgemm.data.readers import UNLABELLED
from edgemm.errors import CodeNotTrusted, ConfigError, InputError
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


@pytest.mark.parametrize("alone", [False, True], ids=["beside-train", "unlabelled-only"])
def test_distill_learns_from_unlabelled_rows_with_the_caption_blanked(folder_with_unlabelled, monkeypatch, alone):
    from edgemm.compress.stages import distill as stage
    seen = []
    original = stage.DistillationLoss.__call__

    def spy(self, student, inputs, labels):  # what each step's loss gets: labels, and the token ids of those rows
        seen.append((labels.clone(), inputs[1].clone()))
        return original(self, student, inputs, labels)
    monkeypatch.setattr(stage.DistillationLoss, "__call__", spy)
    teacher, student = resolve_model(OWN), resolve_model(OWN)
    data = str(folder_with_unlabelled)
    totals = []
    config = DistillConfig(stage="distill", epochs=1, batch_size=16, unlabelled_split="unlabelled",
                           unlabelled_blank=["text"], unlabelled_samples=30, unlabelled_only=alone)
    distill(student, teacher, config, data=data, progress=lambda done, total, _m: totals.append(total))
    train = 0 if alone else len(load_split(data, "train", student.spec))
    assert totals and totals[-1] == -(-(train + 30) // 16)  # every step of an epoch over train + 30 unlabelled rows
    labels = torch.cat([lab for lab, _ in seen])
    assert int((labels == UNLABELLED).sum()) == 30 and int((labels >= 0).sum()) == train
    assert all((ids[lab == UNLABELLED] == 0).all() and ((lab < 0).all() or (ids[lab >= 0] != 0).any()) for lab, ids in seen)
    assert all(torch.isfinite(p).all() for p in student.module.parameters())
    record = unlabelled_record(config, data)["unlabelled"]
    assert record["split"] == "unlabelled" and record["data"].endswith(folder_with_unlabelled.name)
    assert len(record["fingerprint"]) > 8


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


def test_the_unlabelled_rows_distilled_on_are_a_seeded_subset_with_the_caption_blanked(folder_with_unlabelled):
    spec = resolve_model(OWN).spec
    data = str(folder_with_unlabelled)
    config = DistillConfig(stage="distill", unlabelled_split="unlabelled", unlabelled_blank=["text"], unlabelled_samples=7)
    rows = unlabelled_rows(config, data, spec)
    assert len(rows) == 7 and (rows.labels == UNLABELLED).all()
    assert (rows.inputs["input_ids"] == 0).all() and (rows.inputs["attention_mask"] == 0).all()
    full = load_split(data, "unlabelled", spec)
    picked = find_source(data).load_rows("unlabelled", data, spec, 7)  # decoded alone, the same rows
    match = [np.flatnonzero((full.inputs["pixel_values"] == row).all(axis=(1, 2, 3))) for row in picked.inputs["pixel_values"]]
    assert all(len(m) == 1 for m in match) and len({int(m[0]) for m in match}) == 7
    assert np.array_equal(rows.inputs["pixel_values"], picked.inputs["pixel_values"])
    with pytest.raises(ValueError, match="do nothing without unlabelled_split"):
        DistillConfig(stage="distill", unlabelled_blank=["text"])
    with pytest.raises(ValueError, match="do nothing without unlabelled_split"):
        DistillConfig(stage="distill", unlabelled_only=True)


def test_numbered_classes_with_an_empty_cell_read_as_integers(tmp_path):
    from examples.own_model.model import CLASSES, make_folder
    root = make_folder(tmp_path, n=10)
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    for i, row in enumerate(rows):
        row["label"] = "" if i == 0 else str(CLASSES.index(row["label"]))
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    spec = resolve_model(OWN).spec
    train = load_split(str(root), "train", spec)  # pandas reads the column as 1.0, 2.0, NaN
    assert train.labels[0] == UNLABELLED and train.labels[1:].tolist() == [i % len(CLASSES) for i in (1, 2, 5, 6, 7)]
    assert (load_split(str(root), "test", spec).labels >= 0).all()


def test_joining_refuses_rows_of_another_fixed_shape():
    spec = resolve_model(OWN).spec

    def split(side: int, seq: int) -> Split:
        return Split("s", {"pixel_values": np.zeros((1, 3, side, side), np.float32),
                           "input_ids": np.ones((1, seq), np.int64), "attention_mask": np.ones((1, seq), np.int64)},
                     np.zeros(1, np.int64))
    with pytest.raises(InputError, match="input 'pixel_values'"):
        split(32, 4).joined(split(16, 4), spec)


def test_the_report_leaves_out_unlabelled_splits_and_a_held_out_split_is_not_a_pool(folder_with_unlabelled):
    spec = resolve_model(OWN).spec
    data = str(folder_with_unlabelled)
    notes = []
    recipe = recipe_model().model_validate({"name": "u", "stages": [{"stage": "distill", "unlabelled_split": "unlabelled"}]})
    assert labelled_report_splits(data, SPLITS, recipe, spec, notes.append) == ("test",)
    assert notes == ["note: split 'unlabelled' has rows without a label: left out of the report"]
    leak = recipe_model().model_validate({"name": "u", "stages": [{"stage": "distill", "unlabelled_split": "test"}]})
    with pytest.raises(ConfigError, match="names \\['test'\\]: a held-out split"):
        labelled_report_splits(data, SPLITS, leak, spec, notes.append)


def test_a_classifier_is_not_trained_on_rows_without_labels(folder_with_unlabelled):
    from edgemm.train import TrainConfig, train_classifier
    model = resolve_model(OWN)
    pool = load_split(str(folder_with_unlabelled), "unlabelled", model.spec)
    with pytest.raises(InputError, match="has no labelled rows"):
        train_classifier(model.module, model.spec, pool, pool, TrainConfig(epochs=1))


def test_unlabelled_data_named_as_code_in_a_recipe_runs_only_when_trusted(monkeypatch):
    monkeypatch.delenv("EDGEMM_TRUST_CODE", raising=False)
    config = DistillConfig(stage="distill", unlabelled_split="pool", unlabelled_data="tests.conftest:no_such_function")
    with pytest.raises(CodeNotTrusted, match="distill.unlabelled_data"):
        DistillStage().check_usable(config)


@pytest.mark.parametrize("pool_first", [False, True], ids=["pool-after", "pool-first-excel-bom"])
def test_class_names_pandas_reads_as_missing_stay_class_names(tmp_path, pool_first):
    """pandas reads the cells NA, None, null, nan... of a CSV as missing: in a data folder they are class names
    and captions like any other, and only an empty cell is a row without a label. The same images listed again
    in an unlabelled pool keep their own (empty) cells; a CSV saved by Excel starts with a byte-order mark."""
    from examples.own_model.model import make_folder
    root = make_folder(tmp_path / "d", n=30)
    names = {"red": "None", "green": "NA", "blue": "null"}
    table = list(csv.DictReader(open(root / "metadata.csv")))
    for i, row in enumerate(table):
        row["label"] = names[row["label"]] if i else ""
        row["text"] = "NA" if i == 1 else row["text"]
    pool = [{**row, "label": "", "text": "", "split": "pool"} for row in table if row["split"] == "train"]
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8-sig" if pool_first else "utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(pool + table if pool_first else table + pool)
    spec = resolve_model(OWN).spec
    spec = spec.model_copy(update={"task": spec.task.model_copy(update={"labels": tuple(names.values())})})
    wanted = {split: np.asarray([UNLABELLED if i == 0 else list(names.values()).index(row["label"])
                                 for i, row in enumerate(table) if row["split"] == split]) for split in ("train", "val")}
    for split, labels in wanted.items():
        assert (load_split(str(root), split, spec).labels == labels).all()
    assert (load_split(str(root), "pool", spec).labels == UNLABELLED).all()
    from edgemm.data.readers import build_inputs
    caption = build_inputs({"image": [table[1]["file_name"]], "text": ["NA"]}, spec, root)
    first = next(s for s in ("train", "val", "test") if table[1]["split"] == s)
    index = [r for r in table if r["split"] == first].index(table[1])
    loaded = load_split(str(root), first, spec).inputs
    assert all((loaded[k][index][:caption[k].shape[1]] == caption[k][0]).all() for k in caption)


def test_a_pool_needs_no_column_for_the_towers_it_blanks(folder_with_unlabelled, tmp_path):
    """Images that come without captions: a pool folder with no text column at all, its caption blanked."""
    spec = resolve_model(OWN).spec
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    with open(pool / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "split"])
        for row in csv.DictReader(open(folder_with_unlabelled / "metadata.csv")):
            if row["split"] == "unlabelled":
                shutil.copy(folder_with_unlabelled / row["file_name"], pool / row["file_name"])
                writer.writerow([row["file_name"], "pool"])
    config = DistillConfig(stage="distill", unlabelled_split="pool", unlabelled_data=str(pool), unlabelled_blank=["text"])
    rows = unlabelled_rows(config, str(folder_with_unlabelled), spec)
    assert len(rows) == 40 and (rows.labels == UNLABELLED).all()
    assert (rows.inputs["input_ids"] == 0).all() and (rows.inputs["attention_mask"] == 0).all()
    spec.check_inputs(rows.inputs)
    train = load_split(str(folder_with_unlabelled), "train", spec).joined(rows, spec)
    assert len(train) == len(rows) + len(load_split(str(folder_with_unlabelled), "train", spec))
    with pytest.raises(InputError, match="no column.*'text'"):  # not blanked: the column is needed
        unlabelled_rows(config.model_copy(update={"unlabelled_blank": []}), str(folder_with_unlabelled), spec)


def _two_text_towers(leading: str, shared: bool):
    from edgemm.spec import AxisRange, InputSpec, ModelSpec, OutputSpec, TaskSpec
    other = "seq" if shared else "seq2"
    return ModelSpec(name="m", inputs=(
        InputSpec(name="ids_a", modality="text", dtype="int64", shape=(leading, "seq"), vocab_size=100, pad_id=0, tower="a"),
        InputSpec(name="ids_b", modality="text", dtype="int64", shape=(leading, other), vocab_size=100, pad_id=0, tower="b")),
        outputs=(OutputSpec(name="logits", shape=(leading, 3)),),
        task=TaskSpec(kind="classification", output="logits", num_classes=3),
        axes={leading: AxisRange(min=1, opt=4, max=64), "seq": AxisRange(min=1, opt=8, max=32),
              "seq2": AxisRange(min=1, opt=8, max=32)})


@pytest.mark.parametrize("leading,shared", [("batch", True), ("n", False)])
def test_blanked_inputs_take_the_sizes_of_the_axes_they_share(tmp_path, leading, shared):
    rng = np.random.default_rng(0)
    path = tmp_path / "pool.npz"
    np.savez(path, **{"pool/ids_a": rng.integers(1, 100, (10, 6)), "pool/ids_b": rng.integers(1, 100, (10, 6)),
                      "empty/ids_a": np.zeros((0, 6), np.int64), "empty/ids_b": np.zeros((0, 6), np.int64)})
    spec = _two_text_towers(leading, shared)
    config = DistillConfig(stage="distill", unlabelled_split="pool", unlabelled_blank=["b"])
    rows = unlabelled_rows(config, str(path), spec)
    assert rows.inputs["ids_a"].shape == (10, 6) and rows.inputs["ids_b"].shape == (10, 6 if shared else 1)
    assert (rows.inputs["ids_b"] == 0).all() and (rows.inputs["ids_a"] > 0).all()
    with pytest.raises(ConfigError, match="unlabelled_blank names \\['B'\\]"):  # the Python API checks names too
        unlabelled_rows(config.model_copy(update={"unlabelled_blank": ["B"]}), str(path), spec)
    with pytest.raises(ConfigError, match="has no split 'poool'"):
        unlabelled_rows(config.model_copy(update={"unlabelled_split": "poool"}), str(path), spec)
    with pytest.raises(InputError, match="has no rows"):
        unlabelled_rows(config.model_copy(update={"unlabelled_split": "empty"}), str(path), spec)
