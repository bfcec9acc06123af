"""Train and evaluate a model against its spec's dataset (used by the demo; reused by distillation)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgemm.data.datasets import Split
from edgemm.metrics import accuracy
from edgemm.spec import ModelSpec

ProgressFn = Callable[[int, int, str], None]  # (done, total, message)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05
    seed: int = 0
    max_steps: int | None = None  # caps the run (tests, smoke runs)


@dataclass
class TrainResult:
    best_val_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def to_tensors(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """Inputs in the spec's order: the contract's positional calling convention."""
    return [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in spec.input_names]


@torch.inference_mode()
def predict(model: nn.Module, spec: ModelSpec, split: Split, batch_size: int = 256) -> np.ndarray:
    model.eval()
    outs = [model(*to_tensors(spec, x)).float().numpy() for x, _ in split.batches(batch_size)]
    return np.concatenate(outs)


def evaluate(model: nn.Module, spec: ModelSpec, split: Split) -> float:
    return accuracy(predict(model, spec, split), split.labels)


def train_classifier(model: nn.Module, spec: ModelSpec, train: Split, val: Split, config: TrainConfig,
                     progress: ProgressFn | None = None) -> TrainResult:
    """AdamW + one-cycle schedule; keeps the weights of the best validation epoch."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = config.epochs * steps_per_epoch if config.max_steps is None else min(
        config.max_steps, config.epochs * steps_per_epoch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=total)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    start, step, best, best_state, history = time.perf_counter(), 0, -1.0, None, []
    for epoch in range(config.epochs):
        model.train()
        shuffled = train.take(rng.permutation(len(train)))
        for inputs, labels in shuffled.batches(config.batch_size):
            if step >= total:
                break
            loss = loss_fn(model(*to_tensors(spec, inputs)), torch.from_numpy(labels))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            if progress:
                progress(step, total, f"{spec.name} epoch {epoch + 1} loss {loss.item():.3f}")
        val_acc = evaluate(model, spec, val)
        history.append({"epoch": epoch + 1, "loss": float(loss.item()), "val_accuracy": val_acc})
        if val_acc > best:
            best, best_state = val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
        if step >= total:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best, len(history), time.perf_counter() - start, history)
