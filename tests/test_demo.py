"""`edgemm demo` re-runs only what changed: a model trained with the same settings is reused."""
from __future__ import annotations

from edgemm.demo import BASELINES, FUSED, run_demo
from edgemm.train import TrainConfig


def test_demo_reuses_models_trained_with_the_same_settings(tmp_path):
    short = TrainConfig(epochs=1, max_steps=3)
    first = run_demo(tmp_path, train=short, bench=False, log=lambda _m: None)
    assert first.reused == [] and set(first.accuracy) == {FUSED, *BASELINES}
    manifests = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("manifest.json")}
    assert len(manifests) == 4
    logs: list[str] = []
    again = run_demo(tmp_path, train=short, bench=False, log=logs.append)
    assert again.reused == [FUSED, *BASELINES] and again.accuracy == first.accuracy
    assert {p: p.stat().st_mtime_ns for p in manifests} == manifests  # nothing rewritten
    assert sum("reusing" in line for line in logs) == 4
    changed = run_demo(tmp_path, train=TrainConfig(epochs=1, max_steps=4), bench=False, log=lambda _m: None)
    assert changed.reused == []  # other settings: trained again
