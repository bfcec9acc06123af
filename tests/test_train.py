"""Training really learns, and keeps its best validation epoch."""
from __future__ import annotations

import pytest

from edgemm.data.datasets import load_split
from edgemm.models.registry import resolve_model
from edgemm.train import TrainConfig, evaluate, train_classifier


def test_training_beats_chance_and_records_history():
    model = resolve_model("demo-text-only")
    train, val = load_split("edgemm-digits", "train").head(1500), load_split("edgemm-digits", "val")
    before = evaluate(model.module, model.spec, val)
    result = train_classifier(model.module, model.spec, train, val, TrainConfig(epochs=3, batch_size=64, lr=3e-3))
    after = evaluate(model.module, model.spec, val)
    assert len(result.history) == 3 and result.history[0]["loss"] > result.history[-1]["loss"]
    assert after == result.best_val_accuracy  # best epoch's weights restored
    assert after > max(0.2, before + 0.05)  # chance is 0.1; hints narrow the digit down


def _scripted_fit(monkeypatch, val_accuracy: list[float], patience: int):
    """Train for real, but read validation accuracy from a script (the schedule, not the model, is on trial)."""
    from edgemm import train

    scripted = iter(val_accuracy)
    monkeypatch.setattr(train, "evaluate", lambda *_args: next(scripted))
    model = resolve_model("demo-text-only")
    data = load_split("edgemm-digits", "train").head(64)  # one step per epoch
    return train_classifier(model.module, model.spec, data, data,
                            TrainConfig(epochs=len(val_accuracy), batch_size=64, patience=patience))


def test_early_stopping_waits_for_the_learning_rate_to_anneal(monkeypatch):
    """Bug: patience ran out while the one-cycle learning rate was still high, so distillation stopped
    before the annealing epochs that give its best accuracy (the default recipe then missed its gate)."""
    result = _scripted_fit(monkeypatch, [0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.6, 0.7, 0.8, 0.9], patience=3)
    assert result.epochs_run == 10 and result.best_val_accuracy == 0.9 and not result.stopped_early


def test_early_stopping_still_stops_once_annealed(monkeypatch):
    result = _scripted_fit(monkeypatch, [0.5, 0.6] + [0.6] * 8, patience=2)
    assert result.stopped_early and result.epochs_run < 10 and result.best_val_accuracy == 0.6


def test_resume_after_a_crash_while_checkpointing_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """Bug: checkpoint files were overwritten in place before checkpoint.json, so a crash between the two
    resumed epoch-2 weights with epoch-1 counters; dropout's RNG was not restored either."""
    import torch

    from edgemm import train
    from edgemm.train import fit

    data, val = load_split("edgemm-digits", "train").head(256), load_split("edgemm-digits", "val").head(200)
    config = TrainConfig(epochs=3, batch_size=64)

    def run(folder):
        model = resolve_model("demo-text-only")
        result = fit(model.module, model.spec, data, val, config, checkpoint_dir=folder)
        return model.module.state_dict(), result

    uninterrupted, _ = run(tmp_path / "a")
    real_write_json, calls = train.write_json, []

    def crash_on_second_checkpoint(path, payload):
        calls.append(path)
        if len(calls) == 2:  # epoch 2's tensors are on disk, its checkpoint.json is not
            raise KeyboardInterrupt
        return real_write_json(path, payload)

    monkeypatch.setattr(train, "write_json", crash_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(train, "write_json", real_write_json)
    resumed, result = run(tmp_path / "b")
    assert result.resumed_from_epoch == 1 and result.epochs_run == 3
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
    assert [p.name for p in (tmp_path / "b").glob("epoch-*")] == ["epoch-003"]  # older checkpoints cleaned up
