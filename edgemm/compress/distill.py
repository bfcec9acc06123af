"""Knowledge distillation: the pruned student learns from the unpruned teacher.

Loss = alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * task loss
       + feature_weight * MSE(student tower embeddings, teacher tower embeddings).

Runs unchanged under ``torchrun`` (see ``python -m edgemm.compress.distill``).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgemm.compress.recipe import DistillStage
from edgemm.models.registry import LoadedModel
from edgemm.train import LossFn, TrainConfig, TrainResult, fit


def _tower_outputs(model: nn.Module, store: dict[str, torch.Tensor]) -> list:
    """Hooks that capture each tower's embedding (fusion models with a ``towers`` ModuleDict)."""
    towers = getattr(model, "towers", None)
    if not isinstance(towers, nn.ModuleDict):
        return []
    return [tower.register_forward_hook(lambda _m, _i, out, key=name: store.__setitem__(key, out))
            for name, tower in towers.items()]


def distillation_loss(teacher: nn.Module, config: DistillStage) -> LossFn:
    teacher.eval()
    t = config.temperature
    student_feats: dict[str, torch.Tensor] = {}
    teacher_feats: dict[str, torch.Tensor] = {}
    hooks_ready: dict[int, bool] = {}

    def loss(student: nn.Module, inputs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        inner = student.module if isinstance(student, nn.parallel.DistributedDataParallel) else student
        if config.feature_weight and id(inner) not in hooks_ready:
            hooks_ready[id(inner)] = bool(_tower_outputs(inner, student_feats) and _tower_outputs(teacher, teacher_feats))
        with torch.no_grad():
            teacher_logits = teacher(*inputs)
        logits = student(*inputs)
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                      log_target=True, reduction="batchmean") * t * t
        total = config.alpha * kd + (1 - config.alpha) * F.cross_entropy(logits, labels)
        if config.feature_weight and student_feats:
            total = total + config.feature_weight * sum(
                F.mse_loss(student_feats[k], teacher_feats[k]) for k in student_feats if k in teacher_feats)
        return total
    return loss


def distill(student: LoadedModel, teacher: LoadedModel, config: DistillStage, data: str | None = None,
            checkpoint_dir: Path | None = None, progress=None) -> TrainResult:
    from edgemm.data.datasets import load_split

    spec = student.spec
    dataset = data or spec.dataset
    train = load_split(dataset, "train").for_inputs(spec.input_names)
    val = load_split(dataset, "val").for_inputs(spec.input_names)
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               max_steps=config.max_steps, patience=config.patience, label_smoothing=0.0)
    return fit(student.module, spec, train, val, train_config, distillation_loss(teacher.module, config),
               progress, checkpoint_dir)


def main() -> None:
    """Distil STUDENT (a model dir) from TEACHER; under torchrun each process trains its share."""
    parser = argparse.ArgumentParser(description="edgemm distillation worker (runs under torchrun)")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()
    from edgemm.models.registry import resolve_model, save_model

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    teacher, student = resolve_model(args.teacher), resolve_model(args.student)
    config = DistillStage(stage="distill", epochs=args.epochs, max_steps=args.max_steps)
    result = distill(student, teacher, config, checkpoint_dir=args.out / "checkpoint")
    rank = torch.distributed.get_rank() if world > 1 else 0
    if rank == 0:
        save_model(student, args.out)
        print(f"world {world}: best val accuracy {result.best_val_accuracy:.4f} after {result.epochs_run} epochs")
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
