"""Training really learns, and keeps its best validation epoch."""
from __future__ import annotations

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

