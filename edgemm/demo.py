"""The built-in demo, end to end: train the reference model and its unimodal baselines on the
demo dataset, export the fused model to ONNX (validated), benchmark torch vs ONNX Runtime.

Every step writes into ``out_dir`` with a manifest; a step whose manifest
records the same configuration is reused, so a re-run only redoes what changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from edgemm.artifacts import read_manifest, run_directory, write_manifest
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import write_report
from edgemm.bench.runner import run_bench
from edgemm.bench.schema import BenchReport
from edgemm.data.datasets import load_split
from edgemm.export.profiles import DEFAULT_PROFILE, load_profile
from edgemm.export.target import EXPORT_TARGETS
from edgemm.models.registry import resolve_model, save_model
from edgemm.train import TrainConfig, evaluate, train_classifier

FUSED = "demo-fusion"
BASELINES = ("demo-image-only", "demo-audio-only", "demo-text-only")
EVAL_SPLITS = ("val", "test", "ood")
Progress = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class DemoResult:
    out_dir: Path
    accuracy: dict[str, dict[str, float]]  # model -> split -> accuracy
    bench: BenchReport | None
    reused: list[str] = field(default_factory=list)  # models whose earlier training was reused


def _config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def train_zoo_model(name: str, out_dir: Path, config: TrainConfig,
                    progress: Progress | None = None) -> tuple[dict[str, float], bool]:
    """Train a zoo model on its dataset, save it (safetensors + model.json + manifest).

    Returns the accuracy per split and whether an earlier run with the same settings was reused.
    """
    run_config = {"model": name, "train": asdict(config), "splits": list(EVAL_SPLITS)}
    manifest = read_manifest(out_dir)
    if manifest and manifest.get("complete") and manifest["config"].get("key") == _config_key(run_config):
        return manifest["metrics"]["accuracy"], True  # same model, same settings: reuse
    model = resolve_model(name)
    spec = model.spec
    train, val = load_split(spec.dataset, "train", spec), load_split(spec.dataset, "val", spec)
    result = train_classifier(model.module, spec, train, val, config,
                              progress=(lambda d, t, _m: progress(name, d, t)) if progress else None)
    accuracy = {split: evaluate(model.module, spec, load_split(spec.dataset, split, spec)) for split in EVAL_SPLITS}
    files = save_model(model, out_dir)
    write_manifest(out_dir, kind="train", inputs={"dataset": spec.dataset},
                   config={**run_config, "key": _config_key(run_config)},
                   metrics={"accuracy": accuracy, "parameters": model.parameter_count(),
                            "seconds": round(result.seconds, 1), "history": result.history},
                   artifacts=files, extra={"spec": spec.model_dump(mode="json")})
    return accuracy, False


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 8, threads: int | None = None,
             batch_sizes: tuple[int, ...] = (1, 16), profile: str = DEFAULT_PROFILE, train: TrainConfig | None = None,
             timing: TimingSettings | None = None, progress: Progress | None = None,
             log: Callable[[str], None] = print, bench: bool = True) -> DemoResult:
    """``train`` overrides the training settings built from ``epochs`` (shorter runs in tests)."""
    with run_directory(out_dir) as folder:  # checked writable before minutes of training; one writer at a time
        accuracy, reused = _train_models(folder, train or TrainConfig(epochs=epochs), progress, log)
        if not bench:
            return DemoResult(folder, accuracy, None, reused)
        report = _export_and_bench(folder, profile, batch_sizes, threads, timing, log)
        return DemoResult(folder, accuracy, report, reused)


def _train_models(out_dir: Path, config: TrainConfig, progress: Progress | None,
                  log: Callable[[str], None]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The fused model and its single-modality baselines; returns accuracy per model and the reused ones."""
    accuracy, reused = {}, []
    for name in (FUSED, *BASELINES):
        log(f"train {name}")
        target = out_dir / "model" if name == FUSED else out_dir / "baselines" / name
        accuracy[name], was_reused = train_zoo_model(name, target, config, progress)
        if was_reused:
            log(f"  {name}: trained before with the same settings, reusing {target}")
            reused.append(name)
    return accuracy, reused


def _export_and_bench(out_dir: Path, profile: str, batch_sizes: tuple[int, ...], threads: int | None,
                      timing: TimingSettings | None, log: Callable[[str], None]) -> BenchReport:
    log("export demo-fusion to ONNX (dynamo, onnxslim) and validate against PyTorch")
    exported = EXPORT_TARGETS.get("onnx").export(resolve_model(out_dir), out_dir / "onnx", load_profile(profile))
    log("benchmark torch eager vs ONNX Runtime CPU")
    report = run_bench([str(out_dir), str(exported.path)], batch_sizes=batch_sizes, threads=threads,
                       splits=("test", "ood"), timing=timing, progress=lambda msg: log(f"  {msg}"))
    write_report(report, out_dir / "bench")
    return report
