"""prune.drop_blocks: a CNN tower's residual blocks removed by how little the model's output moves without each,
recorded by the entries kept, so a reload replays the cut on a fresh build without pickling."""
from __future__ import annotations

import json

import pytest
import torch

from edgemm import api
from edgemm.bench.latency import TimingSettings
from edgemm.compress.recipe import recipe_model
from edgemm.compress.stages.prune import PruneConfig, prune
from edgemm.errors import ConfigError, ModelLoadError
from edgemm.models.registry import resolve_model, save_model
from edgemm.runtime.convert import to_tensors

RESIDUAL = "tests.fixtures.user_models:build_residual"
DATA = "tests.fixtures.user_models:data_splits"
FAST = TimingSettings(warmup=1, min_iterations=3, min_seconds=0.0, rounds=1)


def _rows(model):
    return tuple(to_tensors(model.spec, model.spec.example_inputs({"batch": 8, "seq": 5}, seed=1)))


def test_the_block_whose_removal_moves_nothing_goes_and_the_reload_replays_it(tmp_path):
    model = resolve_model(RESIDUAL)
    rows = _rows(model)
    with torch.no_grad():
        before = model.module(*rows)
    metrics = prune(model, PruneConfig(stage="prune", ratio=0.0, drop_blocks={"pixels": 1}), None, rows)
    dropped = metrics["blocks_dropped"]["pixels"]
    assert dropped["removed"] == ["blocks.0"]  # its branch is planted at zero
    assert set(dropped["drift"]) == {"blocks.0", "blocks.2", "blocks.3"}  # the downsampling conv is no candidate
    assert dropped["drift"]["blocks.0"] < 1e-6 < min(dropped["drift"]["blocks.2"], dropped["drift"]["blocks.3"])
    assert [type(b).__name__ for b in model.module.blocks] == ["Conv2d", "ResidualBlock", "ResidualBlock"]
    with torch.no_grad():
        assert torch.allclose(model.module(*rows), before, atol=1e-6)
    save_model(model, tmp_path / "dropped")
    record = json.loads((tmp_path / "dropped" / "model.json").read_text())["structure"]["blocks"]
    assert record == {"length": 3, "kept": [1, 2, 3]}  # the first three entries would not fit these weights
    reloaded = resolve_model(str(tmp_path / "dropped"))
    with torch.no_grad():
        assert torch.equal(reloaded.module(*rows), model.module(*rows))


def test_a_reload_refuses_kept_entries_its_build_does_not_have(tmp_path):
    model = resolve_model(RESIDUAL)
    prune(model, PruneConfig(stage="prune", ratio=0.0, drop_blocks={"pixels": 1}), None, _rows(model))
    save_model(model, tmp_path / "dropped")
    path = tmp_path / "dropped" / "model.json"
    saved = json.loads(path.read_text())
    for kept, says in (([1, 2, 7], "keeps entries \\[1, 2, 7\\]"), ([[1], 2, 3], "which is not a shape"),
                       ([True, 2, 3], "which is not a shape"), ([1, 2], "keeps 2 entries but has length 3")):
        saved["structure"]["blocks"]["kept"] = kept
        path.write_text(json.dumps(saved))
        with pytest.raises(ModelLoadError, match=says):
            resolve_model(str(tmp_path / "dropped"))


def test_pruning_a_reloaded_model_again_keeps_the_factory_entries_of_both_cuts(tmp_path):
    model = resolve_model(RESIDUAL)
    rows = _rows(model)
    prune(model, PruneConfig(stage="prune", ratio=0.0, drop_blocks={"pixels": 1}), None, rows)
    save_model(model, tmp_path / "once")
    again = resolve_model(str(tmp_path / "once"))
    metrics = prune(again, PruneConfig(stage="prune", ratio=0.0, drop_blocks={"pixels": 1}), None, rows)
    assert len(metrics["blocks_dropped"]["pixels"]["removed"]) == 1
    save_model(again, tmp_path / "twice")
    kept = json.loads((tmp_path / "twice" / "model.json").read_text())["structure"]["blocks"]["kept"]
    assert len(kept) == 2 and 1 in kept and set(kept) < {1, 2, 3}  # factory indices; the downsampling conv stays
    with torch.no_grad():
        assert torch.equal(resolve_model(str(tmp_path / "twice")).module(*rows), again.module(*rows))


def test_a_list_left_empty_is_refused(tmp_path):
    model = resolve_model(RESIDUAL)
    net = model.module  # the downsampling conv moved into the stem: one block left in the list, removable
    net.stem, net.blocks = torch.nn.Sequential(net.stem, net.blocks[1]), torch.nn.ModuleList([net.blocks[2]])
    with pytest.raises(ConfigError, match="would remove every block of 'blocks'"):
        prune(model, PruneConfig(stage="prune", ratio=0.0, drop_blocks={"pixels": 1}), None, _rows(model))


def test_asking_more_blocks_than_the_tower_has_names_the_count():
    model = resolve_model(RESIDUAL)
    with pytest.raises(ConfigError, match="asks 4 block\\(s\\) of 'pixels', which has 3"):
        prune(model, PruneConfig(stage="prune", ratio=0.0, drop_blocks={"pixels": 4}), None, _rows(model))


def test_compress_drops_a_block_ranked_on_train_rows_and_exports_the_result(tmp_path):
    recipe = {"name": "drop-one", "gates": {"max_accuracy_drop": 100},
              "stages": [{"stage": "prune", "ratio": 0.0, "drop_blocks": {"pixels": 1}}]}
    result = api.compress(RESIDUAL, recipe_model().model_validate(recipe), tmp_path / "run", data=DATA,
                          batch_sizes=(1,), timing=FAST, log=lambda _m: None)
    metrics = json.loads((tmp_path / "run" / "02-prune" / "manifest.json").read_text())["metrics"]
    assert metrics["blocks_dropped"]["pixels"]["removed"] == ["blocks.0"]
    assert metrics["parameters_after"] < metrics["parameters_before"]
    final = resolve_model(str(result.final))  # the exported graph, validated against the pruned model
    assert final.kind == "onnx" and result.report.results[2].accuracy


def test_a_tower_without_enough_blocks_is_refused_before_any_stage_runs(tmp_path):
    recipe = {"name": "drop-too-many", "gates": {"max_accuracy_drop": 100},
              "stages": [{"stage": "prune", "ratio": 0.0, "drop_blocks": {"tokens": 1}}]}  # an Embedding alone
    with pytest.raises(ConfigError, match="asks 1 block\\(s\\) of 'tokens', which has 0"):
        api.compress(RESIDUAL, recipe_model().model_validate(recipe), tmp_path / "run", data=DATA,
                     batch_sizes=(1,), timing=FAST, log=lambda _m: None)
    assert not (tmp_path / "run" / "01-export").exists()  # refused before the first stage


def test_channels_pruned_after_blocks_dropped_in_the_same_stage():
    """From review: the towers traced before the cut named 'blocks.3', gone after it (KeyError)."""
    model = resolve_model(RESIDUAL)
    rows = _rows(model)
    metrics = prune(model, PruneConfig(stage="prune", ratio=0.0, towers={"pixels": 0.25}, drop_blocks={"pixels": 1}),
                    None, rows)
    assert metrics["parameters_after"] < metrics["parameters_before"]
    assert all(path in dict(model.module.named_modules()) for path in metrics["towers"]["pixels"])
    with torch.no_grad():
        assert model.module(*rows).shape == (8, 5)
