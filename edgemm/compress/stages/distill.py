"""The ``distill`` stage: the pruned student learns from the unpruned teacher.

Loss = alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * task loss
       + feature_weight * MSE(student tower embeddings, teacher tower embeddings).

Resumable: an interrupted ``edgemm compress`` continues from the last epoch's checkpoint.
Runs unchanged under ``torchrun`` (see ``python -m edgemm.compress.stages.distill``).
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgemm.compress.stage import STAGES, Artifact, Context, Stage, StageConfig
from edgemm.data.datasets import load_split
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel, resolve_model, save_model
from edgemm.train import TrainConfig, TrainResult, fit

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")
CHECKPOINT_DIR = "checkpoint"


class DistillConfig(StageConfig):
    stage: Literal["distill"]
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the KL term; 1 - alpha for the task loss")
    feature_weight: float = Field(0.0, ge=0, description="MSE between teacher and student tower embeddings")
    patience: int = Field(3, ge=1, description="early stopping: epochs without validation gain")
    max_steps: int | None = Field(None, ge=1)


@STAGES.register
class DistillStage(Stage):
    name = "distill"
    description = "knowledge distillation from the input model (KL + task + tower-embedding MSE), resumable, DDP-ready"
    config = DistillConfig
    consumes = produces = "torch"
    requires = ("torch",)
    resumable = True  # the checkpoint folder survives an interrupted run

    def splits_read(self, config: DistillConfig | None) -> list[str]:
        return ["train", "val"]

    def run(self, config: DistillConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        student = artifact.load()
        progress = (lambda d, t, _m: ctx.progress("distill", d, t)) if ctx.progress else None
        result = distill(student, ctx.teacher, config, ctx.dataset, ctx.stage_dir / CHECKPOINT_DIR, progress)
        save_model(student, ctx.stage_dir)
        shutil.rmtree(ctx.stage_dir / CHECKPOINT_DIR, ignore_errors=True)  # scratch: the finished stage has its model
        return Artifact("torch", ctx.stage_dir), {
            "best_val_accuracy": result.best_val_accuracy, "epochs": result.epochs_run,
            "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
            "history": result.history}


def _tower_outputs(model: "torch.nn.Module", store: dict[str, "torch.Tensor"]) -> list:
    """Hooks that capture each tower's embedding (fusion models with a ``towers`` ModuleDict)."""
    towers = getattr(model, "towers", None)
    if not isinstance(towers, torch.nn.ModuleDict):
        return []
    return [tower.register_forward_hook(lambda _m, _i, out, key=name: store.__setitem__(key, out))
            for name, tower in towers.items()]


class DistillationLoss:
    """The loss ``fit`` calls; it hooks the towers of teacher and student on first use and unhooks on
    :meth:`close`, so neither model keeps capturing embeddings after distillation."""

    def __init__(self, teacher: "torch.nn.Module", config: DistillConfig):
        self.teacher, self.config = teacher.eval(), config
        self.student_feats: dict[str, "torch.Tensor"] = {}
        self.teacher_feats: dict[str, "torch.Tensor"] = {}
        self.hooks: list = []
        self.hooked: set[int] = set()

    def __call__(self, student: "torch.nn.Module", inputs: list["torch.Tensor"], labels: "torch.Tensor") -> "torch.Tensor":
        config, t = self.config, self.config.temperature
        inner = student.module if isinstance(student, torch.nn.parallel.DistributedDataParallel) else student
        if config.feature_weight and id(inner) not in self.hooked:
            self.hooked.add(id(inner))
            self.hooks += _tower_outputs(inner, self.student_feats) + _tower_outputs(self.teacher, self.teacher_feats)
        with torch.no_grad():
            teacher_logits = self.teacher(*inputs)
        logits = student(*inputs)
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                      log_target=True, reduction="batchmean") * t * t
        total = config.alpha * kd + (1 - config.alpha) * F.cross_entropy(logits, labels)
        shared = [k for k in self.student_feats if k in self.teacher_feats]
        if config.feature_weight and shared:
            total = total + config.feature_weight * sum(
                F.mse_loss(self.student_feats[k], self.teacher_feats[k]) for k in shared)
        return total

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks, self.hooked = [], set()
        self.student_feats.clear()
        self.teacher_feats.clear()


def distill(student: LoadedModel, teacher: LoadedModel, config: DistillConfig, data: str | None = None,
            checkpoint_dir: Path | None = None, progress=None) -> TrainResult:
    spec = student.spec
    dataset = data or spec.dataset
    train = load_split(dataset, "train").for_inputs(spec.input_names)
    val = load_split(dataset, "val").for_inputs(spec.input_names)
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               max_steps=config.max_steps, patience=config.patience, label_smoothing=0.0)
    loss = DistillationLoss(teacher.module, config)
    try:
        return fit(student.module, spec, train, val, train_config, loss, progress, checkpoint_dir)
    finally:
        loss.close()


def main() -> None:
    """Distil STUDENT (a model dir) from TEACHER; under torchrun each process trains its share."""
    parser = argparse.ArgumentParser(description="edgemm distillation worker (runs under torchrun)")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    teacher, student = resolve_model(args.teacher), resolve_model(args.student)
    config = DistillConfig(stage="distill", epochs=args.epochs, max_steps=args.max_steps)
    result = distill(student, teacher, config, checkpoint_dir=args.out / CHECKPOINT_DIR)
    rank = torch.distributed.get_rank() if world > 1 else 0
    if rank == 0:
        save_model(student, args.out)
        print(f"world {world}: best val accuracy {result.best_val_accuracy:.4f} after {result.epochs_run} epochs")
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
