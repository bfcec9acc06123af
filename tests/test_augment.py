"""Distillation's input augmentation: images get new views, other inputs do not, and teacher and
student always see the same view."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemm.compress.augment import augment_images, augment_inputs, drop_modalities
from edgemm.compress.stages.distill import DistillationLoss, DistillConfig
from edgemm.data.datasets import load_split
from edgemm.models.registry import resolve_model
from edgemm.runtime.convert import to_tensors


def test_images_get_new_views_and_other_modalities_pass_unchanged(trained_demo):
    spec = resolve_model(trained_demo).spec
    inputs = to_tensors(spec, load_split("edgemm-digits", "val").head(16).inputs)
    out = augment_inputs(spec, inputs, torch.Generator().manual_seed(0))
    for name, before, after in zip(spec.input_names, inputs, out):
        assert after.shape == before.shape and after.dtype == before.dtype
        if spec.input(name).modality == "image":
            assert not torch.equal(after, before)
        else:
            assert after is before
    again = augment_inputs(spec, inputs, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(out, again))  # the same seed, the same views


def test_a_crop_of_a_flat_image_stays_flat_and_a_full_view_can_only_mirror():
    flat = torch.full((8, 3, 32, 32), 0.7)
    assert torch.allclose(augment_images(flat, torch.Generator().manual_seed(1)), flat)  # border padding, no black edges
    ramp = torch.linspace(0, 1, 32).expand(4, 3, 32, 32).contiguous()
    full = augment_images(ramp, torch.Generator().manual_seed(2), min_area=1.0)
    for view in full:  # crop = whole image: the only change left is a left-right flip
        assert torch.allclose(view, ramp[0], atol=1e-5) or torch.allclose(view, ramp[0].flip(-1), atol=1e-5)


def test_teacher_and_student_see_the_same_augmented_batch(trained_demo):
    """A student identical to its teacher has zero distillation loss only if both saw one view."""
    teacher, student = resolve_model(trained_demo), resolve_model(trained_demo)
    batch = load_split("edgemm-digits", "val").head(64)
    inputs, labels = to_tensors(student.spec, batch.inputs), torch.from_numpy(batch.labels)
    config = DistillConfig(stage="distill", alpha=1.0, feature_weight=1.0, augment=True)
    loss = DistillationLoss(teacher.module, config, {"image": ["towers.image"]}, student.spec)
    with torch.no_grad():
        assert loss(student.module.eval(), inputs, labels).item() < 1e-6
    loss.close()


def test_modality_dropout_blanks_whole_towers_in_some_samples(trained_demo):
    spec = resolve_model(trained_demo).spec
    inputs = to_tensors(spec, load_split("edgemm-digits", "val").head(256).inputs)
    out = drop_modalities(spec, inputs, {"text": 0.5, "audio": 0.0}, torch.Generator().manual_seed(0))
    by_name = dict(zip(spec.input_names, out))
    before = dict(zip(spec.input_names, inputs))
    assert torch.equal(by_name["audio"], before["audio"]) and torch.equal(by_name["image"], before["image"])
    pad = spec.input("text").pad_id
    blank = (by_name["text"] == pad).all(1)
    changed = (by_name["text"] != before["text"]).any(1)
    assert 80 < int(blank.sum()) < 176  # about half of 256 samples
    assert torch.equal(by_name["text"][~blank], before["text"][~blank])  # the rest untouched
    assert changed.sum() > 60  # the demo's own missing captions are blank already; most dropped ones were not


def test_a_dropped_tower_takes_all_its_inputs_with_it():
    """ids and attention mask of one text tower vanish in the same samples (a mask without ids is no caption)."""
    from edgemm.spec import InputSpec, ModelSpec, OutputSpec, TaskSpec
    spec = ModelSpec(name="m", inputs=(
        InputSpec(name="image", modality="image", dtype="float32", shape=("batch", 3, 8, 8)),
        InputSpec(name="ids", modality="text", dtype="int64", shape=("batch", "seq"), vocab_size=50, pad_id=1,
                  tower="text"),
        InputSpec(name="mask", modality="text", dtype="int64", shape=("batch", "seq"), tower="text")),
        outputs=(OutputSpec(name="logits", shape=("batch", 3)),),
        task=TaskSpec(kind="classification", output="logits", num_classes=3),
        axes={"batch": {"min": 1, "opt": 4, "max": 64}, "seq": {"min": 1, "opt": 4, "max": 16}})
    ids, mask = torch.randint(2, 50, (64, 6)), torch.ones(64, 6, dtype=torch.int64)
    image, out_ids, out_mask = drop_modalities(spec, [torch.rand(64, 3, 8, 8), ids, mask], {"text": 0.5},
                                               torch.Generator().manual_seed(3))
    gone_ids, gone_mask = (out_ids == 1).all(1), (out_mask == 0).all(1)
    assert 0 < int(gone_ids.sum()) < 64 and torch.equal(gone_ids, gone_mask)


def test_teacher_and_student_see_the_same_dropped_modalities(trained_demo):
    teacher, student = resolve_model(trained_demo), resolve_model(trained_demo)
    batch = load_split("edgemm-digits", "val").head(64)
    inputs, labels = to_tensors(student.spec, batch.inputs), torch.from_numpy(batch.labels)
    config = DistillConfig(stage="distill", alpha=1.0, modality_dropout={"image": 0.5, "text": 0.5})
    loss = DistillationLoss(teacher.module, config, {}, student.spec)
    with torch.no_grad():
        torch.manual_seed(0)
        assert loss(student.module.eval(), inputs, labels).item() < 1e-6
        torch.manual_seed(0)  # the same draws again: the loss above saw blanked inputs, not the batch as given
        seen = drop_modalities(student.spec, inputs, config.modality_dropout)
        assert not all(torch.equal(a, b) for a, b in zip(seen, inputs))
    loss.close()
    with pytest.raises(ValueError, match="modality_dropout names \\['txt'\\]"):  # callers past check_recipe too
        drop_modalities(student.spec, inputs, {"txt": 0.5})


def test_blanking_a_tower_leaves_out_data_the_model_does_not_take():
    """Bug: the digits data always holds image, audio and text; a two-tower model's blanked split raised KeyError."""
    from edgemm.models.demo import demo_spec
    spec = demo_spec(("image", "text"))
    split = load_split("edgemm-digits", "val", spec)
    assert "audio" in split.inputs
    blank = split.blanked(spec, "text")
    assert set(blank.inputs) == {"image", "text"} and (blank.inputs["text"] == spec.input("text").pad_id).all()
    assert np.array_equal(blank.inputs["image"], split.inputs["image"])


def test_blanking_an_input_name_that_is_not_a_tower_is_refused():
    """Bug: `blanked_accuracy.py --tower pixel_values` on effnet-minilm (tower 'image') blanked nothing and
    printed the unblanked accuracy as if the image were missing."""
    from edgemm.errors import InputError
    from edgemm.models.demo import demo_spec
    spec = demo_spec(("image", "text"))
    with pytest.raises(InputError, match="(?s)'txt' is not a tower of model.*\\['image', 'text'\\]"):
        load_split("edgemm-digits", "val", spec).blanked(spec, "txt")


def test_only_token_ids_are_blanked_to_their_pad_id():
    """A mask given the tokenizer's pad id (1 in RoBERTa) would read 'attend everywhere': masks blank to 0."""
    from edgemm.spec import InputSpec
    ids = InputSpec(name="ids", modality="text", dtype="int64", shape=("batch", "seq"), vocab_size=50, pad_id=1)
    mask = InputSpec(name="mask", modality="text", dtype="int64", shape=("batch", "seq"), pad_id=1)
    assert (ids.empty_value, mask.empty_value) == (1, 0)


def test_trimming_keeps_the_tokens_of_a_second_text_tower_when_the_first_is_blank():
    """Bug: the batch's length came from the first mask alone; with that tower blanked (all zeros), the other
    tower's tokens on the same axis were cut to the axis minimum."""
    from edgemm.data.datasets import Split
    from edgemm.spec import InputSpec, ModelSpec, OutputSpec, TaskSpec, TokenizerFrom

    def text(name, tower, field):
        return InputSpec(name=name, modality="text", dtype="int64", shape=("batch", "seq"), tower=tower,
                         vocab_size=50 if field == "input_ids" else None, pad_id=0 if field == "input_ids" else None,
                         preprocess=TokenizerFrom(column=tower, tokenizer="tok", field=field))
    spec = ModelSpec(name="two-texts", inputs=(
        text("a_ids", "a", "input_ids"), text("a_mask", "a", "attention_mask"),
        text("b_ids", "b", "input_ids"), text("b_mask", "b", "attention_mask")),
        outputs=(OutputSpec(name="logits", shape=("batch", 2)),),
        task=TaskSpec(kind="classification", output="logits", num_classes=2),
        axes={"batch": {"min": 1, "opt": 2, "max": 8}, "seq": {"min": 1, "opt": 8, "max": 16}})
    mask = np.zeros((2, 10), np.int64)
    mask[:, :3], ids = 1, np.arange(20).reshape(2, 10)
    long_mask = np.zeros((2, 10), np.int64)
    long_mask[:, :7] = 1
    split = Split("s", {"a_ids": ids * mask, "a_mask": mask, "b_ids": ids * long_mask, "b_mask": long_mask},
                  np.array([0, 1]))
    blank = split.blanked(spec, "a").trimmed(spec)
    assert blank.inputs["b_ids"].shape == (2, 7) and blank.inputs["b_mask"].sum() == 14  # b keeps its 7 tokens
    assert split.trimmed(spec).inputs["a_ids"].shape == (2, 7)  # the longest mask on the axis decides
