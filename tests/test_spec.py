"""The model contract: declaration checks, example inputs, input checks."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edgemm.errors import InputError
from edgemm.models.demo import demo_spec
from edgemm.spec import AxisRange, InputSpec, ModelSpec, OutputSpec, TaskSpec


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return demo_spec()


def _spec(**overrides) -> ModelSpec:
    base = dict(name="m", inputs=(InputSpec(name="x", modality="signal", dtype="float32", shape=("batch", 4)),),
                outputs=(OutputSpec(name="y", shape=("batch", 2)),), task=TaskSpec(kind="classification", output="y"),
                axes={"batch": AxisRange(min=1, opt=2, max=8)})
    return ModelSpec(**(base | overrides))


def test_spec_rejects_inconsistent_declarations():
    x = InputSpec(name="x", modality="signal", dtype="float32", shape=("batch", 4))
    with pytest.raises(ValidationError, match="unique"):
        _spec(inputs=(x, x))
    with pytest.raises(ValidationError, match="need a min/opt/max"):
        _spec(axes={})
    with pytest.raises(ValidationError, match="task output"):
        _spec(task=TaskSpec(kind="classification", output="nope"))
    with pytest.raises(ValidationError, match="min <= opt <= max"):
        AxisRange(min=4, opt=2, max=8)
    with pytest.raises(ValidationError):
        InputSpec(name="x", modality="smell", dtype="float32", shape=(1,))


def test_multi_input_spec_describes_each_modality(spec):
    assert spec.modalities == {"image": "image", "audio": "audio", "text": "text"}
    assert spec.input("audio").dynamic_axes == {0: "batch", 2: "time"}
    assert spec.input("text").dynamic_axes == {0: "batch", 1: "seq"}
    assert set(spec.axes) == {"batch", "time", "seq"}


def test_example_inputs_follow_the_contract_at_any_size(spec):
    feed = spec.example_inputs({"batch": 3, "time": 37, "seq": 5}, seed=1)
    assert feed["image"].shape == (3, 1, 32, 32) and feed["image"].dtype == np.float32
    assert feed["audio"].shape == (3, 40, 37)
    assert feed["text"].shape == (3, 5) and feed["text"].dtype == np.int64
    assert 0 <= feed["image"].min() and feed["image"].max() <= 1
    assert feed["text"].min() >= 1 and feed["text"].max() < spec.input("text").vocab_size  # no padding ids
    assert spec.check_inputs(feed) == {"batch": 3, "time": 37, "seq": 5}
    again = spec.example_inputs({"batch": 3, "time": 37, "seq": 5}, seed=1)
    assert all(np.array_equal(feed[k], again[k]) for k in feed)


def test_spec_round_trips_through_json(spec):
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.pop("audio"), r"missing input\(s\): audio \(audio\)"),
    (lambda f: f.__setitem__("extra", np.zeros(1)), r"unexpected input\(s\) \['extra'\]"),
    (lambda f: f.__setitem__("image", f["image"].astype(np.float64)), "dtype float64, expected float32"),
    (lambda f: f.__setitem__("text", f["text"].astype(np.int32)), "dtype int32, expected int64"),
    (lambda f: f.__setitem__("image", f["image"][:, 0]), r"rank 3\), expected \[batch, 1, 32, 32\]"),
    (lambda f: f.__setitem__("image", np.zeros((2, 1, 28, 28), np.float32)), "size 28 on axis 2, expected 32"),
    (lambda f: f.__setitem__("audio", f["audio"][:1]), "axis 'batch' is 2 in input 'image' but 1 in 'audio'"),
    (lambda f: f["audio"].__setitem__((0, 0, 0), np.nan), "NaN"),
    (lambda f: f["text"].__setitem__((0, 0), 10_000), "token ids outside"),
    (lambda f: f.__setitem__("audio", np.zeros((2, 40, 4), np.float32)), r"'time' = 4 is outside \[16, 400\]"),
])
def test_bad_inputs_are_named(spec, mutate, message):
    feed = spec.example_inputs({"batch": 2})
    mutate(feed)
    with pytest.raises(InputError, match=message) as err:
        spec.check_inputs(feed)
    assert err.value.hint  # every input error says how to fix it
