"""Training loop shared by the demo (task loss) and distillation (teacher + task loss).

Runs unchanged on one process or under ``torchrun`` (DistributedDataParallel,
gloo on CPU): each rank takes its share of every batch. Optional checkpoints
let an interrupted run resume; early stopping watches validation accuracy.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemm.artifacts import atomic_path, write_json
from edgemm.data.datasets import Split
from edgemm.data.readers import UNLABELLED
from edgemm.errors import InputError
from edgemm.lazy import lazy_import
from edgemm.runtime import accuracy
from edgemm.runtime.evaluate import eval_batch_size
from edgemm.runtime.backends.pytorch import TorchSession
from edgemm.runtime.convert import to_tensors
from edgemm.spec import ModelSpec

torch = lazy_import("torch")
safetensors_torch = lazy_import("safetensors.torch")

ProgressFn = Callable[[int, int, str], None]  # (done, total, message)
CHECKPOINT = "checkpoint.json"  # written last: names the epoch folder that holds a complete checkpoint
WARMUP_SHARE = 0.3  # one-cycle schedule: the learning rate rises for this share of the steps, then anneals
LossFn = Callable[[Any, list[Any], Any], Any]  # (model, input tensors, labels) -> loss tensor


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05
    seed: int = 0
    max_steps: int | None = None  # caps the run (tests, smoke runs)
    patience: int | None = None  # early stopping: epochs without validation gain, once the LR has annealed
    keep_input: bool = False  # the input weights count as epoch 0: never return weights worse than them


@dataclass
class TrainResult:
    best_val_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    stopped_early: bool = False
    input_val_accuracy: float | None = None  # with keep_input: the weights before training
    best_epoch: int = 0  # 0: no epoch beat the input weights, which were kept


def evaluate(model: Any, spec: ModelSpec, split: Split) -> float:
    """Accuracy of a PyTorch module, scored like every other session (runtime.accuracy)."""
    return accuracy(TorchSession(model, spec), split, batch_size=eval_batch_size(split, limit=256))


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def task_loss(config: TrainConfig) -> LossFn:
    return lambda model, inputs, labels: labelled_loss(model(*inputs), labels, config.label_smoothing)


def labelled_loss(logits: "torch.Tensor", labels: "torch.Tensor", label_smoothing: float = 0.0) -> "torch.Tensor":
    """Cross-entropy over the rows that have a label: unlabelled rows add nothing, and a batch of only those
    adds zero (not the NaN of a mean over no rows, which would wreck every weight)."""
    known = labels != UNLABELLED
    if not bool(known.any()):
        return logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(logits[known], labels[known], label_smoothing=label_smoothing)


def fit(model: Any, spec: ModelSpec, train: Split, val: Split, config: TrainConfig,
        loss_fn: LossFn | None = None, progress: ProgressFn | None = None,
        checkpoint_dir: Path | None = None, param_groups: list[dict] | None = None,
        frozen: list[Any] = ()) -> TrainResult:
    """AdamW + one-cycle schedule; keeps the weights of the best validation epoch.

    ``param_groups`` (AdamW groups, each with its own peak ``lr``) default to every parameter at
    ``config.lr``; ``frozen`` modules are neither updated nor put in training mode (BatchNorm
    statistics and dropout stay as they were), so they come out bit-identical."""
    torch.manual_seed(config.seed)
    rank, world = _dist()
    loss_fn = loss_fn or task_loss(config)
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = config.epochs * steps_per_epoch if config.max_steps is None else min(
        config.max_steps, config.epochs * steps_per_epoch)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    peaks = [g.get("lr", config.lr) for g in groups]
    optimiser = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=peaks, total_steps=total,
                                                   pct_start=WARMUP_SHARE)
    state = {"epoch": 0, "step": 0, "best": -1.0, "stale": 0, "history": [], "stopped_early": False,
             "input": None, "best_epoch": 0}
    best_state = None
    if checkpoint_dir is not None:
        state, best_state = _resume(checkpoint_dir, model, optimiser, schedule, config, state)
    if config.keep_input and state["epoch"] == 0:  # the input is the bar every epoch must clear
        state["input"] = state["best"] = evaluate(model, spec, val)
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start, resumed = time.perf_counter(), state["epoch"]
    for epoch in range(state["epoch"], config.epochs):
        if state["stopped_early"]:  # resumed after the run had already stopped
            break
        model.train()
        for module in frozen:
            module.eval()
        order = np.random.default_rng(config.seed + epoch).permutation(len(train))
        for inputs, labels in train.batches(config.batch_size, order):  # no shuffled copy of the whole split
            if state["step"] >= total:
                break
            mine = slice(rank, None, world)  # this rank's share of the global batch
            loss = loss_fn(trained, [t[mine] for t in to_tensors(spec, inputs)], torch.from_numpy(labels[mine]))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            state["step"] += 1
            if progress and rank == 0:
                progress(state["step"], total, f"epoch {epoch + 1} loss {loss.item():.3f}")
        val_acc = evaluate(model, spec, val)
        state["history"].append({"epoch": epoch + 1, "loss": float(loss.item()), "val_accuracy": val_acc})
        state["epoch"] = epoch + 1
        if val_acc > state["best"]:
            state["best"], state["stale"], state["best_epoch"] = val_acc, 0, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif _settling(state["step"], total, schedule.get_last_lr()[0], peaks[0]):
            state["stale"] += 1
        state["stopped_early"] = bool(config.patience and state["stale"] >= config.patience)
        if checkpoint_dir is not None and rank == 0:
            _save_checkpoint(checkpoint_dir, model, optimiser, schedule, config, state, best_state)
        if state["stopped_early"]:
            break
        if state["step"] >= total:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(state["best"], state["epoch"], time.perf_counter() - start, state["history"], resumed,
                       state["stopped_early"], state.get("input"), state.get("best_epoch", 0))


def _settling(step: int, total: int, lr: float, peak_lr: float) -> bool:
    """Whether a validation dip counts towards early stopping: only once the one-cycle schedule has
    annealed below half its peak. Before that the high learning rate makes dips expected, and the
    best epochs come at the end of the anneal (stopping earlier kept an under-trained epoch)."""
    return step > WARMUP_SHARE * total and lr < 0.5 * peak_lr


def train_classifier(model: Any, spec: ModelSpec, train: Split, val: Split, config: TrainConfig,
                     progress: ProgressFn | None = None) -> TrainResult:
    if len(train) and not (np.asarray(train.labels) != UNLABELLED).any():
        raise InputError(f"split {train.name!r} has no labelled rows: a classifier cannot be trained on it",
                         "label the training rows (unlabelled rows serve distillation: distill.unlabelled_split)")
    return fit(model, spec, train, val, config, task_loss(config), progress)


# -- checkpoints: one folder per epoch, named by checkpoint.json once complete ---------------------------
def _save_checkpoint(folder: Path, model, optimiser, schedule, config: TrainConfig, state: dict, best) -> None:
    """Tensors via safetensors, optimiser/schedule/RNG via torch.save of tensors and numbers only.

    Each epoch writes a fresh ``epoch-NNN/`` folder and only then points ``checkpoint.json`` at it,
    so a crash in the middle leaves the previous checkpoint whole.
    """
    files = folder / f"epoch-{state['epoch']:03d}"
    files.mkdir(parents=True, exist_ok=True)
    with atomic_path(files / "student.safetensors") as tmp:
        safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    with atomic_path(files / "best.safetensors") as tmp:
        safetensors_torch.save_file({k: v.contiguous() for k, v in best.items()}, str(tmp))
    with atomic_path(files / "optimiser.pt") as tmp:
        torch.save({"optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                    "rng": torch.get_rng_state()}, tmp)  # dropout masks continue as if never interrupted
    write_json(folder / CHECKPOINT, {"config": asdict(config), "files": files.name, **state})
    for old in folder.glob("epoch-*"):
        if old != files:
            shutil.rmtree(old, ignore_errors=True)


def _resume(folder: Path, model, optimiser, schedule, config: TrainConfig, state: dict):
    meta_path = folder / CHECKPOINT
    if not meta_path.is_file():
        return state, None
    meta = json.loads(meta_path.read_text())
    if meta.pop("config") != asdict(config):
        return state, None  # different settings: start clean
    files = folder / meta.pop("files")
    model.load_state_dict(safetensors_torch.load_file(str(files / "student.safetensors")))
    extra = torch.load(files / "optimiser.pt", weights_only=True)
    optimiser.load_state_dict(extra["optimiser"])
    schedule.load_state_dict(extra["schedule"])
    torch.set_rng_state(extra["rng"])
    return meta, safetensors_torch.load_file(str(files / "best.safetensors"))
