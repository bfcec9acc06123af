"""The ``distill`` stage: the pruned student learns from the unpruned teacher.

Loss = alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * task loss
       + feature_weight * MSE(student tower outputs, teacher tower outputs).

``augment`` shows both models new crops and flips of the images every step, ``modality_dropout`` blanks
whole towers in some samples (``compress/augment.py``); teacher and student always see the same batch, each
at its own image size (after a ``resize`` stage the teacher keeps the original resolution).
Towers are traced from the model (``models/tower_map.py``): ``freeze`` keeps pretrained towers
bit-identical, ``tower_lr`` gives each its own learning rate. The stage's input counts as epoch 0:
it never hands on weights worse than it was given.

Resumable: an interrupted ``edgemm compress`` continues from the last epoch's checkpoint.
Runs unchanged under ``torchrun`` (see ``python -m edgemm.compress.stages.distill``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgemm.compress.augment import augment_inputs, drop_modalities
from edgemm.compress.stage import STAGES, Artifact, Context, Stage, StageConfig
from edgemm.data.datasets import Split, data_fingerprint, data_ref, find_source, load_split
from edgemm.data.readers import UNLABELLED
from edgemm.errors import ConfigError, InputError
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel, resolve_model, save_model
from edgemm.models.tower_map import TowerMap, trace_towers
from edgemm.spec import ModelSpec
from edgemm.trust import require_trusted
from edgemm.train import TrainConfig, TrainResult, fit, labelled_loss

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
    freeze: list[str] = Field(default_factory=list, description="towers (or module paths) left untouched: "
                                                                "pretrained encoders keep their weights")
    tower_lr: dict[str, float] = Field(default_factory=dict, description="peak learning rate per tower (or module "
                                                                         "path); the rest train at lr")
    augment: bool = Field(False, description="new random crops and flips of the image inputs every step, the same "
                                             "for teacher and student (compress/augment.py): more to learn from "
                                             "when a pruned CNN tower relearns its teacher on a small split")
    modality_dropout: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict, description="share of samples per step in which a tower's inputs are blanked (zeros, "
        "pad ids), the same for teacher and student: the student keeps the teacher's answer without that modality "
        "instead of leaning on it (e.g. {text: 0.3} when the captions out of domain are in another language)")
    unlabelled_split: str | None = Field(None, description="a split of rows to distil on besides train, their "
        "labels unused (a split without labels: no label column, or empty cells): the teacher's answers are the "
        "targets, so any data of the domain counts, e.g. many more images than were ever labelled")
    unlabelled_data: str | None = Field(None, description="where that split is (a data folder, .npz, "
                                                          "module:function); default: the run's data")
    unlabelled_blank: list[str] = Field(default_factory=list, description="towers whose inputs are blanked in the "
        "unlabelled rows (e.g. [text] for images that come without captions)")
    unlabelled_samples: int | None = Field(None, ge=1, description="read at most this many unlabelled rows (a "
                                                                   "seeded random subset): they are held in memory")
    unlabelled_only: bool = Field(False, description="distil on the unlabelled rows alone, train left out: a first "
        "distill stage in which a pruned tower relearns its teacher from many rows, before a labelled distill stage "
        "(mixed into one stage, each labelled row is seen as often as each of the many unlabelled ones)")

    @field_validator("unlabelled_data")
    @classmethod
    def _home(cls, ref: str | None) -> str | None:
        return str(Path(ref).expanduser()) if ref and ref.startswith("~") else ref  # a recipe shared between users

    @model_validator(mode="after")
    def _unlabelled_needs_a_split(self) -> "DistillConfig":
        if not self.unlabelled_split and (self.unlabelled_data or self.unlabelled_blank or self.unlabelled_samples
                                          or self.unlabelled_only):
            raise ValueError("unlabelled_data/_blank/_samples/_only do nothing without unlabelled_split: name the split")
        return self


@STAGES.register
class DistillStage(Stage):
    name = "distill"
    description = "knowledge distillation from the input model (KL + task + tower-embedding MSE), resumable, DDP-ready"
    config = DistillConfig
    consumes = produces = "torch"
    requires = ("torch",)
    resumable = True  # the checkpoint folder survives an interrupted run
    recovers = True
    gate_fix = ("distil longer (epochs), lower lr, or freeze pretrained towers (freeze: [tower]); "
                "if its input was already far off, compress less before it (prune less, resize less)")

    def splits_read(self, config: DistillConfig | None) -> list[str]:
        extra = [config.unlabelled_split] if config and config.unlabelled_split and not config.unlabelled_data else []
        return [*([] if config and config.unlabelled_only else ["train"]), "val", *extra]

    def data_read(self, config: DistillConfig | None) -> list[str]:
        return [config.unlabelled_data] if config and config.unlabelled_split and config.unlabelled_data else []

    def check_usable(self, config: DistillConfig | None) -> None:
        super().check_usable(config)
        if config and config.unlabelled_data:
            source = find_source(config.unlabelled_data)
            if source.runs_code:  # a recipe is a file: what it names is code
                require_trusted(config.unlabelled_data, "the recipe's distill.unlabelled_data", "data function")
            _check_pool_split(source, config.unlabelled_data, config.unlabelled_split)

    def run(self, config: DistillConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        student = artifact.load()
        progress = (lambda d, t, _m: ctx.progress("distill", d, t)) if ctx.progress else None
        result = distill(student, ctx.teacher, config, ctx.dataset, ctx.stage_dir / CHECKPOINT_DIR, progress)
        save_model(student, ctx.stage_dir)
        shutil.rmtree(ctx.stage_dir / CHECKPOINT_DIR, ignore_errors=True)  # scratch: the finished stage has its model
        return Artifact("torch", ctx.stage_dir), {
            "best_val_accuracy": result.best_val_accuracy, "epochs": result.epochs_run,
            "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
            "input_val_accuracy": result.input_val_accuracy, "best_epoch": result.best_epoch,
            "kept_input": result.best_epoch == 0, "history": result.history, **unlabelled_record(config, ctx.dataset)}


def unlabelled_record(config: DistillConfig, dataset: str) -> dict:
    """For the manifest: which unlabelled rows the student learned from (the data's fingerprint pins them)."""
    if not config.unlabelled_split:
        return {}
    ref = data_ref(config.unlabelled_data or dataset)
    return {"unlabelled": {"data": ref, "split": config.unlabelled_split, "fingerprint": data_fingerprint(ref),
                           "blank": config.unlabelled_blank, "samples_cap": config.unlabelled_samples}}


def _tower_outputs(model: "torch.nn.Module", roots: dict[str, list[str]], store: dict[str, "torch.Tensor"]) -> list:
    """Hooks that capture each tower's output (towers with one outermost module)."""
    modules = dict(model.named_modules())
    return [modules[paths[0]].register_forward_hook(
                lambda _m, _i, out, key=tower: store.__setitem__(key, _first_tensor(out)))
            for tower, paths in roots.items() if len(paths) == 1 and paths[0] in modules]


def _first_tensor(out):
    """A tower's output: a tensor, or the first of a tuple / Hugging Face output (last_hidden_state)."""
    while not isinstance(out, torch.Tensor):
        out = out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))
    return out


def training_groups(model: "torch.nn.Module", towers: TowerMap, config: DistillConfig) -> tuple[list, list]:
    """AdamW parameter groups (per-tower learning rates) and the frozen modules."""
    frozen = [m for key in config.freeze for m in towers.resolve(model, key, "distill.freeze")]
    frozen_params = {id(p) for m in frozen for p in m.parameters()}
    for m in frozen:
        m.requires_grad_(False)
    groups, claimed = [], set(frozen_params)
    for key, lr in config.tower_lr.items():
        params = [p for m in towers.resolve(model, key, "distill.tower_lr") for p in m.parameters() if id(p) not in claimed]
        claimed |= {id(p) for p in params}
        if params:
            groups.append({"params": params, "lr": lr})
    rest = [p for p in model.parameters() if id(p) not in claimed]
    if rest:
        groups.insert(0, {"params": rest, "lr": config.lr})
    if not groups:
        raise ConfigError("distill: every parameter is frozen", "freeze fewer towers")
    return groups, frozen


class DistillationLoss:
    """The loss ``fit`` calls; it hooks the towers of teacher and student on first use and unhooks on
    :meth:`close`, so neither model keeps capturing embeddings after distillation."""

    def __init__(self, teacher: "torch.nn.Module", config: DistillConfig, roots: dict[str, list[str]] | None = None,
                 spec: "ModelSpec | None" = None, student_spec: "ModelSpec | None" = None):
        """``spec``: the contract the batches are read with (the teacher's); ``student_spec`` where the student's
        images have another size (a resize stage before): each batch is resized for it, the teacher keeps its own."""
        self.teacher, self.config, self.roots, self.spec = teacher.eval(), config, roots or {}, spec
        self.student_spec = student_spec if student_spec is not None and spec is not None and any(
            spec.input(i.name).shape != i.shape for i in student_spec.inputs) else None
        if (config.augment or config.modality_dropout) and spec is None:
            raise ValueError("distill.augment and modality_dropout need the model contract (spec) to find the inputs")
        self.student_feats: dict[str, "torch.Tensor"] = {}
        self.teacher_feats: dict[str, "torch.Tensor"] = {}
        self.hooks: list = []
        self.hooked: set[int] = set()

    def __call__(self, student: "torch.nn.Module", inputs: list["torch.Tensor"], labels: "torch.Tensor") -> "torch.Tensor":
        config, t = self.config, self.config.temperature
        inner = student.module if isinstance(student, torch.nn.parallel.DistributedDataParallel) else student
        if config.feature_weight and id(inner) not in self.hooked:
            self.hooked.add(id(inner))
            self.hooks += (_tower_outputs(inner, self.roots, self.student_feats)
                           + _tower_outputs(self.teacher, self.roots, self.teacher_feats))
        if config.augment:
            inputs = augment_inputs(self.spec, inputs)  # global RNG: seeded by fit, restored on resume
        if config.modality_dropout:
            inputs = drop_modalities(self.spec, inputs, config.modality_dropout)
        with torch.no_grad():
            teacher_logits = self.teacher(*inputs)
        logits = student(*(self.for_student(inputs) if self.student_spec else inputs))
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                      log_target=True, reduction="batchmean") * t * t
        total = config.alpha * kd + (1 - config.alpha) * labelled_loss(logits, labels)
        shared = [k for k in self.student_feats
                  if k in self.teacher_feats and self.student_feats[k].shape == self.teacher_feats[k].shape]
        if config.feature_weight and shared:
            total = total + config.feature_weight * sum(
                F.mse_loss(self.student_feats[k], self.teacher_feats[k]) for k in shared)
        return total

    def for_student(self, inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
        """The teacher's batch at the student's image sizes (antialiased bilinear, as the data readers resize)."""
        return [resize_images(tensor, spec.shape[2:]) if spec.modality == "image" and tensor.dim() == 4
                and tuple(tensor.shape[2:]) != tuple(spec.shape[2:]) else tensor
                for spec, tensor in zip(self.student_spec.inputs, inputs)]

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks, self.hooked = [], set()
        self.student_feats.clear()
        self.teacher_feats.clear()


def distill(student: LoadedModel, teacher: LoadedModel, config: DistillConfig, data: str | None = None,
            checkpoint_dir: Path | None = None, progress=None) -> TrainResult:
    spec, read = student.spec, teacher_contract(teacher.spec, student.spec)  # training rows: as the teacher reads
    dataset = data or spec.dataset
    train = None if config.unlabelled_only else load_split(dataset, "train", read).for_inputs(spec.input_names)
    if config.unlabelled_split:
        pool = unlabelled_rows(config, dataset, read)
        train = pool if train is None else train.joined(pool, read)
    val = load_split(dataset, "val", spec).for_inputs(spec.input_names)  # the student is scored as it will run
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               max_steps=config.max_steps, patience=config.patience, label_smoothing=0.0,
                               keep_input=True)
    towers = trace_towers(student.module, spec)
    groups, frozen = training_groups(student.module, towers, config)
    loss = DistillationLoss(teacher.module, config, towers.roots, read, spec)
    try:
        return fit(student.module, spec, train, val, train_config, loss, progress, checkpoint_dir, groups, frozen)
    finally:
        loss.close()


def teacher_contract(teacher: ModelSpec, student: ModelSpec) -> ModelSpec:
    """The student's contract with the teacher's input shapes: the teacher may read larger images than a resized
    student (same inputs by name, else the student's contract: the teacher must take the student's inputs)."""
    if teacher.input_names != student.input_names:
        return student
    return student.model_copy(update={"inputs": tuple(i.model_copy(update={"shape": teacher.input(i.name).shape,
                                                                            "preprocess": teacher.input(i.name).preprocess})
                                                     for i in student.inputs)})


def resize_images(images: "torch.Tensor", size) -> "torch.Tensor":
    return F.interpolate(images, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)


def unlabelled_rows(config: DistillConfig, dataset: str, spec: ModelSpec) -> "Split":
    """The extra rows to distil on: labels dropped (the teacher is their target), towers blanked as asked."""
    ref, split = config.unlabelled_data or dataset, config.unlabelled_split
    source = find_source(ref)
    _check_pool_split(source, ref, split)
    unknown = sorted(set(config.unlabelled_blank) - set(spec.towers))
    if unknown:
        raise ConfigError(f"distill.unlabelled_blank names {unknown}: not a tower of model {spec.name!r}",
                          f"name one of its towers: {sorted(spec.towers)}")
    blank = [i for i in spec.inputs if i.tower_name in config.unlabelled_blank]
    read = spec.model_copy(update={"inputs": tuple(i for i in spec.inputs if i not in blank)})
    try:  # the blanked towers' inputs are not read: images that come without captions need no caption column
        # load_rows, even for every row: a data folder decodes them uncached, so the pool is freed with the stage
        rows = source.load_rows(split, ref, read, config.unlabelled_samples or sys.maxsize).for_inputs(read.input_names)
        if not len(rows):
            raise InputError("it has no rows", "give it rows, or leave it out")
        inputs = {**rows.inputs, **_blanks(blank, spec, rows.inputs, len(rows))}
        spec.check_inputs({k: v[:2] for k, v in inputs.items()})
    except InputError as err:
        raise InputError(f"distill.unlabelled_split {split!r} of {ref}: {err.args[0]}", err.hint) from None
    return Split(rows.name, {name: inputs[name] for name in spec.input_names}, np.full(len(rows), UNLABELLED, np.int64))


def _check_pool_split(source, ref: str, split: str) -> None:
    splits = source.splits_for(ref)
    if split not in splits:
        raise ConfigError(f"distill: unlabelled data {ref} has no split {split!r}; it has {list(splits)}",
                          "name one of those in distill.unlabelled_split")


def _blanks(blank: list, spec: ModelSpec, read: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The blanked inputs at the contract's empty value: an axis they share with the inputs read keeps its size
    there, any other its minimum (joining the pool to train pads it as needed)."""
    sizes = {**spec.sizes("min"), **spec.axis_sizes(read), **{i.shape[0]: rows for i in blank if isinstance(i.shape[0], str)}}
    return {i.name: np.full(i.concrete_shape(sizes), i.empty_value, i.dtype) for i in blank}


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
