"""The built-in demo, end to end: train the reference model and its unimodal baselines on the
demo dataset, export the fused model to ONNX (validated), benchmark torch vs ONNX Runtime.

Every step writes into ``out_dir`` with a manifest; a step whose manifest
records the same configuration is reused, so a re-run only redoes what changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgemm.artifacts import read_manifest, write_manifest
from edgemm.train import TrainConfig

FUSED = "demo-fusion"
BASELINES = ("demo-image-only", "demo-audio-only", "demo-text-only")
EVAL_SPLITS = ("val", "test", "ood")
Progress = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class DemoResult:
    out_dir: Path
    accuracy: dict[str, dict[str, float]]  # model -> split -> accuracy
    bench: dict


def _config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def train_zoo_model(name: str, out_dir: Path, config: TrainConfig, progress: Progress | None = None) -> dict[str, float]:
    """Train a zoo model on its dataset, save it (safetensors + model.json + manifest); return accuracies."""
    from edgemm.data.datasets import load_split
    from edgemm.models.registry import resolve_model, save_model
    from edgemm.train import evaluate, train_classifier

    run_config = {"model": name, "train": asdict(config), "splits": list(EVAL_SPLITS)}
    manifest = read_manifest(out_dir)
    if manifest and manifest.get("complete") and manifest["config"].get("key") == _config_key(run_config):
        return manifest["metrics"]["accuracy"]  # same model, same settings: reuse
    model = resolve_model(name)
    spec = model.spec
    train, val = load_split(spec.dataset, "train"), load_split(spec.dataset, "val")
    result = train_classifier(model.module, spec, train, val, config,
                              progress=(lambda d, t, _m: progress(name, d, t)) if progress else None)
    accuracy = {split: evaluate(model.module, spec, load_split(spec.dataset, split)) for split in EVAL_SPLITS}
    files = save_model(model, out_dir)
    write_manifest(out_dir, kind="train", inputs={"dataset": spec.dataset},
                   config={**run_config, "key": _config_key(run_config)},
                   metrics={"accuracy": accuracy, "parameters": model.parameter_count(),
                            "seconds": round(result.seconds, 1), "history": result.history},
                   artifacts=files, extra={"spec": spec.model_dump(mode="json")})
    return accuracy


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 8, threads: int | None = None,
             batch_sizes: tuple[int, ...] = (1, 16), profile: str = "x86-cpu",
             progress: Progress | None = None, log: Callable[[str], None] = print, bench: bool = True) -> DemoResult:
    from edgemm.bench.report import write_report
    from edgemm.bench.runner import run_bench
    from edgemm.export.onnx import ONNX_FILE, export_onnx
    from edgemm.export.profiles import load_profile
    from edgemm.models.registry import resolve_model

    out_dir = Path(out_dir)
    config = TrainConfig(epochs=epochs)
    accuracy = {}
    for name in (FUSED, *BASELINES):
        log(f"train {name}")
        target = out_dir / "model" if name == FUSED else out_dir / "baselines" / name
        accuracy[name] = train_zoo_model(name, target, config, progress)
    if not bench:
        return DemoResult(out_dir, accuracy, {})
    log("export demo-fusion to ONNX (dynamo, onnxslim) and validate against PyTorch")
    export_onnx(resolve_model(out_dir), out_dir / "onnx", load_profile(profile))
    log("benchmark torch eager vs ONNX Runtime CPU")
    report = run_bench([str(out_dir), str(out_dir / "onnx" / ONNX_FILE)], batch_sizes=batch_sizes, threads=threads,
                       splits=("test", "ood"), progress=lambda msg: log(f"  {msg}"))
    write_report(report, out_dir / "bench")
    return DemoResult(out_dir, accuracy, report)
