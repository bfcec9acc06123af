"""Data sources: a model spec names its dataset; stages, gates and benchmarks ask for a split.

A :class:`DataSource` is a registered component, one module each in ``edgemm/data/sources/``:
a named dataset (``edgemm-digits``) or a format that claims the references it can read (a data
folder, an ``.npz``, ``module:function``). Sources that read raw columns turn them into model
inputs as the model contract's ``preprocess`` says, so ``load`` gets the contract. A source may
also offer raw sensor samples and per-input preprocessors, which the per-modality latency
breakdown times.

The reference a user gives with ``--data`` is recorded in the artifacts a command writes (the
contract's ``dataset``), so later commands on those artifacts find the same data.
"""
from __future__ import annotations

import warnings
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np

from edgemm.data.readers import UNLABELLED
from edgemm.errors import ConfigError, EdgemmWarning, InputError
from edgemm.registry import Component, Registry
from edgemm.trust import require_trusted, trust

if TYPE_CHECKING:
    from edgemm.spec import ModelSpec


@dataclass
class Split:
    """Model-ready inputs (one array per model input, batch first) and labels."""

    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def __post_init__(self) -> None:
        if np.ndim(self.labels) == 0 or any(np.ndim(a) == 0 for a in self.inputs.values()):
            raise InputError(f"split {self.name!r} has a scalar where rows are expected (labels "
                             f"{type(self.labels).__name__})", "give one array per input and one label per row")
        sizes = {name: len(array) for name, array in self.inputs.items()}
        if any(size != len(self.labels) for size in sizes.values()):
            raise InputError(f"split {self.name!r} has {len(self.labels)} labels but inputs of {sizes} rows",
                             "give one label per row of every input")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray | slice) -> "Split":
        return Split(self.name, {k: v[index] for k, v in self.inputs.items()}, self.labels[index])

    def for_inputs(self, names: list[str]) -> "Split":
        """Only the inputs a model takes (a unimodal baseline reads one of the dataset's modalities)."""
        missing = [n for n in names if n not in self.inputs]
        if missing:
            raise InputError(f"split {self.name!r} has no data for input(s) {missing} (it has {sorted(self.inputs)})",
                             "evaluate on a dataset that provides every input of the model")
        return Split(self.name, {n: self.inputs[n] for n in names}, self.labels)

    def head(self, n: int) -> "Split":
        return self.take(slice(0, n))

    def blanked(self, spec: "ModelSpec", tower: str) -> "Split":
        """The model's inputs, those of ``tower`` at the contract's empty value, as if that modality were missing
        in every row (a dataset may hold inputs the model does not take: they are left out)."""
        if tower not in spec.towers:  # blanking nothing would score the split as it is, under another name
            raise InputError(f"{tower!r} is not a tower of model {spec.name!r}",
                             f"name one of its towers: {sorted(spec.towers)}")
        inputs = self.for_inputs(spec.input_names).inputs
        return Split(self.name, {k: np.full_like(v, spec.input(k).empty_value) if spec.input(k).tower_name == tower
                                 else v for k, v in inputs.items()}, self.labels)

    def trimmed(self, spec: "ModelSpec") -> "Split":
        """Without the padding no row of this batch uses: tokenised text is padded to the longest text of
        the whole split, but a batch of short captions runs (and is timed) at its own longest length."""
        masks = [i for i in spec.inputs if getattr(i.preprocess, "field", None) == "attention_mask"
                 and i.name in self.inputs and len(i.shape) == 2 and isinstance(i.shape[1], str)]
        if not masks or not len(self):
            return self
        axis = masks[0].shape[1]
        # every mask on the axis: one text tower blanked (all zeros) must not cut another tower's tokens
        used = np.flatnonzero(np.any([self.inputs[m.name].any(axis=0) for m in masks if m.shape[1] == axis], axis=0))
        length = max(int(used[-1]) + 1 if len(used) else 1, spec.axes[axis].min)
        on_axis = {i.name for i in spec.inputs if len(i.shape) == 2 and i.shape[1] == axis}
        sliced = {name: array[:, :length] if name in on_axis else array for name, array in self.inputs.items()}
        return Split(self.name, sliced, self.labels)

    def joined(self, other: "Split", spec: "ModelSpec") -> "Split":
        """The rows of both, the model's inputs only; token inputs padded to the longer of the two (each split
        is padded to its own longest text) with the contract's empty value."""
        mine, theirs = self.for_inputs(spec.input_names).inputs, other.for_inputs(spec.input_names).inputs

        def padded(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            pad = [(0, want - have) for have, want in zip(array.shape, shape)]
            pad[0] = (0, 0)
            return np.pad(array, pad, constant_values=spec.input(name).empty_value) if any(p for _, p in pad) else array

        joined = {}
        for name in mine:
            a, b = mine[name], theirs[name]
            if a.ndim != b.ndim or any(x != y and not isinstance(axis, str) for x, y, axis
                                       in zip(a.shape[1:], b.shape[1:], spec.input(name).shape[1:])):
                raise InputError(f"input {name!r}: split {other.name!r} has rows of shape {b.shape[1:]}, split "
                                 f"{self.name!r} {a.shape[1:]}", "give both in the model's input shape")
            shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape))  # only the contract's named axes differ
            joined[name] = np.concatenate([padded(name, a, shape), padded(name, b, shape).astype(a.dtype, copy=False)])
        return Split(self.name, joined, np.concatenate([self.labels, other.labels]))

    def batches(self, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Consecutive batches, or batches of the rows in ``order`` (one batch copied at a time)."""
        for start in range(0, len(self), batch_size):
            part = self.take(slice(start, start + batch_size) if order is None else order[start:start + batch_size])
            yield part.inputs, part.labels


Preprocessor = Callable[[Any], np.ndarray]  # one raw sample of one input -> a batch of 1 for the model


class DataSource(Component):
    """Labelled splits for a model's inputs; ``ref`` is how the user named the data."""

    splits: ClassVar[tuple[str, ...]] = ()
    preprocessors: ClassVar[dict[str, Preprocessor] | None] = None  # per input name: raw -> model input
    runs_code: ClassVar[bool] = False  # True: loading calls code the reference names (module:function)

    def matches(self, ref: str) -> bool:
        """Named datasets answer to their name; file formats override this to claim paths."""
        return ref == self.name

    def splits_for(self, ref: str) -> tuple[str, ...]:
        return self.splits

    @abstractmethod
    def load(self, split: str, ref: str, spec: "ModelSpec | None" = None) -> Split:
        """The split's model inputs and labels; ``spec`` says how raw columns become inputs."""

    def load_rows(self, split: str, ref: str, spec: "ModelSpec | None", count: int, seed: int = 0) -> Split:
        """A seeded random subset of ``count`` rows, in their order; sources that can pick rows before decoding
        them override this (the whole split is read here)."""
        rows = self.load(split, ref, spec)
        return rows if count >= len(rows) else rows.take(subset_rows(len(rows), count, seed))

    def labelled(self, ref: str, split: str, spec: "ModelSpec | None" = None) -> bool:
        """Every row has a label (accuracy can be scored on it); sources that can tell without reading the
        inputs say so cheaper."""
        if spec is not None and spec.task.kind != "classification":
            return True
        return bool((np.asarray(self.load(split, ref, spec).labels) != UNLABELLED).all())

    def raw_sample(self, split: str = "test", index: int = 0) -> dict[str, Any] | None:
        """One sample as the sensors deliver it (for end-to-end timing); None when not offered."""
        return None


def subset_rows(total: int, count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``count`` rows drawn without replacement (all rows when there are no more)."""
    if count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


DATASETS: Registry[DataSource] = Registry("dataset", "edgemm.data.sources", entry_points="edgemm.datasets")


def _looks_like_path(ref: str) -> bool:
    """A file or folder reference, not a registered name (module:function refs have no suffix or slash)."""
    return "/" in ref or "\\" in ref or (Path(ref).suffix != "" and ":" not in ref)


def find_source(ref: str) -> DataSource:
    for source in DATASETS:
        if source.matches(ref):
            return source
    if _looks_like_path(ref) and not Path(ref).exists():
        raise ConfigError(f"data {ref!r} does not exist", "give an existing data folder or .npz file")
    raise ConfigError(f"unknown dataset {ref!r}: not a registered name, a data folder, an .npz file or "
                      "module:function", f"registered: {', '.join(DATASETS.names())}; see `edgemm list datasets`")


def data_fingerprint(ref: str) -> str:
    """Changes when the data changes: a file's size and mtime, a folder's newest metadata or listing."""
    path = Path(ref)
    if path.is_file():
        return f"{ref}|{path.stat().st_size}|{path.stat().st_mtime_ns}"
    if path.is_dir():
        stamps = [p.stat().st_mtime_ns for p in (path, *path.iterdir()) if p.is_dir() or p.name.startswith("metadata.")]
        return f"{ref}|{max(stamps)}"
    return ref


def data_ref(ref: str) -> str:
    """The form recorded in artifacts: files and folders as absolute paths, anything else as given."""
    return str(Path(ref).resolve()) if Path(ref).exists() else ref


def choose_data(explicit: str | None, spec: "ModelSpec", trusted: bool) -> str | None:
    """The data a command reads: ``--data`` as given, else the one the contract records. A reference
    that runs code (module:function) recorded in a file someone else wrote runs only when trusted
    (``edgemm.trust``): named again, or ``--trust-code``."""
    if explicit:
        if find_source(explicit).runs_code:
            trust(explicit)  # named by the user: the artifacts that record it may run it in this process
        return data_ref(explicit)
    ref = spec.dataset
    if ref and _looks_like_path(ref) and not Path(ref).exists():  # recorded elsewhere, or relative to elsewhere
        warnings.warn(f"the data model {spec.name!r} records ({ref}) is not here; no accuracy without --data",
                      EdgemmWarning, stacklevel=2)
        return None
    if ref and not trusted and find_source(ref).runs_code:
        require_trusted(ref, f"the contract of model {spec.name!r}", "data function")
    return ref


def load_split(dataset: str, split: str, spec: "ModelSpec | None" = None) -> Split:
    source = find_source(dataset)
    splits = source.splits_for(dataset)
    if split not in splits:
        raise ConfigError(f"dataset {dataset!r} has no split {split!r}", f"choose one of {list(splits)}")
    return source.load(split, dataset, spec)
