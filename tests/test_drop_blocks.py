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
from edgemm.errors import ConfigError
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
    assert dropped["removed"] == ["blocks.2"]  # its branch is planted at zero
    assert set(dropped["drift"]) == {"blocks.0", "blocks.2", "blocks.3"}  # the downsampling conv is no candidate
    assert dropped["drift"]["blocks.2"] < 1e-6 < min(dropped["drift"]["blocks.0"], dropped["drift"]["blocks.3"])
    assert [type(b).__name__ for b in model.module.blocks] == ["ResidualBlock", "Conv2d", "ResidualBlock"]
    with torch.no_grad():
        assert torch.allclose(model.module(*rows), before, atol=1e-6)
    save_model(model, tmp_path / "dropped")
    record = json.loads((tmp_path / "dropped" / "model.json").read_text())["structure"]["blocks"]
    assert record == {"length": 3, "kept": [0, 1, 3]}
    reloaded = resolve_model(str(tmp_path / "dropped"))
    with torch.no_grad():
        assert torch.equal(reloaded.module(*rows), model.module(*rows))


def test_a_reload_refuses_kept_entries_its_build_does_not_have(tmp_path):
    model = resolve_model(RESIDUAL)
    prune(model, PruneConfig(stage="prune", ratio=0.0, drop_blocks={"pixels": 1}), None, _rows(model))
    save_model(model, tmp_path / "dropped")
    path = tmp_path / "dropped" / "model.json"
    saved = json.loads(path.read_text())
    saved["structure"]["blocks"]["kept"] = [0, 1, 7]
    path.write_text(json.dumps(saved))
    with pytest.raises(Exception, match="keeps entries \\[0, 1, 7\\]"):
        resolve_model(str(tmp_path / "dropped"))


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
    assert metrics["blocks_dropped"]["pixels"]["removed"] == ["blocks.2"]
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
