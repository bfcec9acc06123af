"""Data sources: a model spec names its dataset; stages, gates and benchmarks ask for a split.

A :class:`DataSource` is a registered component, one module each in ``edgemm/data/sources/``:
a named dataset (``edgemm-digits``) or a file format that claims the references it can read.
A source may also offer raw sensor samples and per-input preprocessors, which the
per-modality latency breakdown times.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from edgemm.errors import ConfigError, InputError
from edgemm.registry import Component, Registry


@dataclass
class Split:
    """Model-ready inputs (one array per model input, batch first) and labels."""

    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray

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

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        for start in range(0, len(self), batch_size):
            part = self.take(slice(start, start + batch_size))
            yield part.inputs, part.labels


Preprocessor = Callable[[Any], np.ndarray]  # one raw sample of one input -> a batch of 1 for the model


class DataSource(Component):
    """Labelled splits for a model's inputs; ``ref`` is how the user named the data."""

    splits: ClassVar[tuple[str, ...]] = ()
    preprocessors: ClassVar[dict[str, Preprocessor] | None] = None  # per input name: raw -> model input

    def matches(self, ref: str) -> bool:
        """Named datasets answer to their name; file formats override this to claim paths."""
        return ref == self.name

    def splits_for(self, ref: str) -> tuple[str, ...]:
        return self.splits

    @abstractmethod
    def load(self, split: str, ref: str) -> Split: ...

    def raw_sample(self, split: str = "test", index: int = 0) -> dict[str, Any] | None:
        """One sample as the sensors deliver it (for end-to-end timing); None when not offered."""
        return None


DATASETS: Registry[DataSource] = Registry("dataset", "edgemm.data.sources", entry_points="edgemm.datasets")


def find_source(ref: str) -> DataSource:
    for source in DATASETS:
        if source.matches(ref):
            return source
    raise ConfigError(f"unknown dataset {ref!r}", f"choose one of {', '.join(DATASETS.names())}")


def load_split(dataset: str, split: str) -> Split:
    source = find_source(dataset)
    splits = source.splits_for(dataset)
    if split not in splits:
        raise ConfigError(f"dataset {dataset!r} has no split {split!r}", f"choose one of {list(splits)}")
    return source.load(split, dataset)
