"""Dataset registry: a model spec names its dataset; stages ask for a split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from edgemm.errors import ConfigError, InputError


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


Loader = Callable[[str], Split]
DATASETS: dict[str, tuple[Loader, tuple[str, ...]]] = {}


def register_dataset(name: str, splits: tuple[str, ...]) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = (fn, splits)
        return fn
    return deco


def load_split(dataset: str, split: str) -> Split:
    import edgemm.data.digits  # noqa: F401  (registers the built-in dataset)

    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}", f"choose one of {sorted(DATASETS)}")
    loader, splits = DATASETS[dataset]
    if split not in splits:
        raise ConfigError(f"dataset {dataset!r} has no split {split!r}", f"choose one of {list(splits)}")
    return loader(split)
