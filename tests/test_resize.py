"""The resize stage: a tower's images at a lower resolution, the contract following, the teacher distilling at
its own size; and the refusals (a tower without images, data that comes as arrays, a model that needs its size)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from edgemm import api
from edgemm.bench.latency import TimingSettings
from edgemm.compress.recipe import recipe_model
from edgemm.compress.stages.distill import DistillationLoss, DistillConfig
from edgemm.compress.stages.resize import check_forward, resized_spec
from edgemm.data.datasets import load_split
from edgemm.errors import ConfigError
from edgemm.models.registry import resolve_model

from .conftest import FACTORY, OWN

FAST = TimingSettings(warmup=1, min_iterations=3, min_seconds=0.0, rounds=1)
RESIZE_DISTILL = {"name": "half-size", "gates": {"max_accuracy_drop": 100},
                  "stages": [{"stage": "resize", "size": {"pixel_values": 16}},
                             {"stage": "distill", "epochs": 2, "batch_size": 16, "lr": 1e-3, "patience": 2}]}


def test_resize_then_distill_gives_a_model_that_reads_the_data_at_the_new_size(own_run, own_data, tmp_path):
    result = api.compress(str(own_run), recipe_model().model_validate(RESIZE_DISTILL), tmp_path / "run",
                          data=str(own_data), batch_sizes=(1,), timing=FAST, log=lambda _m: None)
    graph = onnx.load(str(result.final))
    pixels = next(i for i in graph.graph.input if i.name == "pixel_values")
    assert [d.dim_value for d in pixels.type.tensor_type.shape.dim][1:] == [3, 16, 16]
    final = resolve_model(str(result.final))
    assert final.spec.input("pixel_values").shape == ("batch", 3, 16, 16)  # the contract travels with the graph
    assert "read at 16x16 (resize stage; built for 32x32)" in final.spec.input("pixel_values").description
    assert load_split(str(own_data), "test", final.spec).inputs["pixel_values"].shape[2:] == (16, 16)
    resize = json.loads((tmp_path / "run" / "02-resize" / "manifest.json").read_text())["metrics"]
    assert resize["resized"] == {"pixel_values": {"from": [32, 32], "to": [16, 16]}}
    teacher, compressed = result.report.results[1], result.report.results[2]  # scored each at its own size
    assert compressed.accuracy["test"] > 0.6 and teacher.accuracy["test"] > 0.6


def test_the_teacher_sees_its_own_size_and_the_student_the_resized_batch():
    model = resolve_model(OWN)
    small = resized_spec(model.spec, {"pixel_values": 16})
    seen = {}
    teacher = resolve_model(OWN).module
    student = resolve_model(OWN).module
    teacher.vision.register_forward_hook(lambda _m, args, _o: seen.__setitem__("teacher", args[0]))
    student.vision.register_forward_hook(lambda _m, args, _o: seen.__setitem__("student", args[0]))
    loss = DistillationLoss(teacher, DistillConfig(stage="distill"), spec=model.spec, student_spec=small)
    feed = model.spec.example_inputs({"batch": 4, "seq": 6})
    images = torch.from_numpy(feed["pixel_values"])
    loss(student, [images, *(torch.from_numpy(feed[n]) for n in ("input_ids", "attention_mask"))],
         torch.zeros(4, dtype=torch.int64))
    assert tuple(seen["teacher"].shape[2:]) == (32, 32) and tuple(seen["student"].shape[2:]) == (16, 16)
    # a flat image halves to the same flat image: the resize keeps the value range
    flat = loss.for_student([torch.full((1, 3, 32, 32), 0.25), torch.zeros(1, 6, dtype=torch.int64)] * 1)
    assert torch.allclose(flat[0], torch.full((1, 3, 16, 16), 0.25))


def test_resize_refuses_towers_without_images_and_data_of_arrays(own_run, tmp_path):
    spec = resolve_model(OWN).spec
    with pytest.raises(ConfigError, match="reads no image input"):
        resized_spec(spec, {"text": 16})
    with pytest.raises(ConfigError, match="not a tower of model"):
        resized_spec(spec, {"vision": 16})
    # arrays come at the size they were saved at: refused before any stage runs, with the fix
    feed = resolve_model(FACTORY).spec.example_inputs({"batch": 12, "seq": 4})
    data = tmp_path / "arrays.npz"
    np.savez(data, **{f"{s}/{k}": v for s in ("train", "val", "test") for k, v in feed.items()},
             **{f"{s}/labels": np.arange(12) % 5 for s in ("train", "val", "test")})
    recipe = {**RESIZE_DISTILL, "stages": [{"stage": "resize", "size": {"pixels": 8}}]}
    with pytest.raises(ConfigError, match=r"gives input .pixels. at \[16, 16\], not at the new size \[8, 8\]") as caught:
        api.compress(FACTORY, recipe_model().model_validate(recipe), tmp_path / "c", data=str(data))
    assert "data folder" in caught.value.hint and not (tmp_path / "c").exists()


class FixedSize(torch.nn.Module):
    """An image tower whose Flatten feeds a Linear: it only runs at the size it was built for."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4 * 16 * 16, 5)

    def forward(self, pixels, tokens):
        return self.head(self.conv(pixels).flatten(1))


def test_a_model_that_needs_its_image_size_is_named_with_the_fix():
    spec = resolve_model(FACTORY).spec
    FixedSize()(*[torch.from_numpy(v) for v in spec.example_inputs({"batch": 2, "seq": 3}).values()])  # runs at 16
    with pytest.raises(ConfigError, match=r"does not run at the new size \{'pixels': '\[16, 16\] -> \[8, 8\]'\}"):
        check_forward(FixedSize(), resized_spec(spec, {"pixels": 8}), spec)

    class Silent(FixedSize):
        def forward(self, pixels, tokens):
            if pixels.shape[-1] != 16:
                raise RuntimeError()  # an error without a message (a bare assert outside pytest)
            return super().forward(pixels, tokens)

    with pytest.raises(ConfigError, match="RuntimeError"):
        check_forward(Silent(), resized_spec(spec, {"pixels": 8}), spec)
