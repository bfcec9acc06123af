"""Naming and loading models: zoo, module:factory, run directories, safe weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from edgemm.errors import ModelLoadError
from edgemm.models.demo import demo_fusion
from edgemm.models.registry import resolve_model, save_model
from edgemm.runtime.convert import to_tensors

from .conftest import FACTORY


@pytest.mark.parametrize("modalities", [("image", "audio", "text"), ("image",), ("audio",), ("text",)])
def test_demo_model_runs_any_modality_subset(modalities):
    model, spec = demo_fusion(modalities)
    feed = spec.example_inputs({"batch": 3, "time": 40, "seq": 5})
    assert model.eval()(*to_tensors(spec, feed)).shape == (3, 10)


def test_missing_text_still_gives_finite_output():
    model, spec = demo_fusion(("text",))
    out = model.eval()(torch.zeros(2, 8, dtype=torch.int64))  # all padding = no text
    assert torch.isfinite(out).all()


def test_demo_factory_rejects_unknown_modality():
    with pytest.raises(ValueError, match="subset"):
        demo_fusion(("smell",))


def test_user_model_loads_through_module_factory():
    loaded = resolve_model(FACTORY)
    assert loaded.kind == "factory" and loaded.spec.name == "tiny-image-text"
    feed = loaded.spec.example_inputs({"batch": 2})
    assert loaded.module(*to_tensors(loaded.spec, feed)).shape == (2, 5)


@pytest.mark.parametrize("ref, message", [
    ("no-such-model", "unknown model 'no-such-model'"),
    ("tests.fixtures.nope:build", "cannot import 'tests.fixtures.nope'"),
    ("tests.fixtures.user_models:nope", "has no callable 'nope'"),
    ("tests.fixtures.user_models:build_raises", "raised RuntimeError: checkpoint store unreachable"),
    ("tests.fixtures.user_models:build_bad_spec", "raised ValidationError: .*dynamic axes \\['seq'\\] need a min/opt/max"),
    ("tests.fixtures.user_models:build_wrong_type", "returned a str, not a torch.nn.Module"),
    ("tests.fixtures.user_models:build_without_spec", "returned no ModelSpec"),
    ("missing.onnx", "does not exist"),
])
def test_unresolvable_models_say_why(ref, message):
    with pytest.raises(ModelLoadError, match=message):
        resolve_model(ref)


def test_run_directory_round_trip_rebuilds_without_pickle(tmp_path):
    original = resolve_model(FACTORY)
    with torch.no_grad():
        for p in original.module.parameters():
            p.add_(0.1)  # differ from a fresh factory call
    save_model(original, tmp_path)
    restored = resolve_model(tmp_path)
    assert restored.kind == "run" and restored.spec == original.spec
    feed = to_tensors(original.spec, original.spec.example_inputs({"batch": 2}))
    assert torch.equal(original.module(*feed), restored.module(*feed))


def test_weights_file_loads_tensors_only_checkpoints(tmp_path):
    model = resolve_model(FACTORY).module
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pt")
    loaded = resolve_model(FACTORY, weights=tmp_path / "ckpt.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.module.state_dict().values()))


def test_pickled_checkpoint_is_refused(tmp_path):
    model = resolve_model(FACTORY).module
    torch.save(model, tmp_path / "whole_model.pt")  # a pickled nn.Module, not tensors
    with pytest.raises(ModelLoadError, match="refuses to unpickle") as err:
        resolve_model(FACTORY, weights=tmp_path / "whole_model.pt")
    assert "state_dict" in err.value.hint


def test_corrupt_and_mismatched_weights_are_refused(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        resolve_model(FACTORY, weights=tmp_path / "bad.safetensors")
    save_file({"head.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelLoadError, match=r"missing \[.*unexpected|wrong shape") as err:
        resolve_model(FACTORY, weights=tmp_path / "other.safetensors")
    assert "head.weight" in str(err.value)


def test_onnx_spec_is_read_back_from_metadata(tiny_onnx):
    loaded = resolve_model(str(tiny_onnx))
    assert loaded.kind == "onnx" and loaded.module is None
    assert loaded.spec == resolve_model(FACTORY).spec


def test_foreign_onnx_gets_an_inferred_spec(tiny_onnx, tmp_path):
    import onnx

    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    spec = resolve_model(str(tmp_path / "foreign.onnx")).spec
    assert spec.input_names == ["pixels", "tokens"]
    assert spec.input("pixels").shape[1:] == (3, 16, 16) and isinstance(spec.input("pixels").shape[0], str)
    assert spec.input("tokens").dtype == "int64"
    feed = spec.example_inputs({})
    assert np.isfinite(feed["pixels"]).all()
