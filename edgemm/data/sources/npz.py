"""Splits in one ``.npz``: an array per split and input (``test/image``, ``test/input_ids``) and the
labels (``test/labels``; a split without them is unlabelled). Arrays are model-ready: no preprocessing,
nothing unpickled."""
from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgemm.data.datasets import DATASETS, DataSource, Split
from edgemm.data.readers import UNLABELLED
from edgemm.errors import InputError

LAYOUT = "numpy.savez(path, **{'train/image': ..., 'train/labels': ..., 'val/image': ...})"


@lru_cache(maxsize=4)
def _arrays(path: str, stamp: float) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not an .npz file (not a zip archive)", f"write it with {LAYOUT}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as err:
        raise InputError(f"{path} holds pickled objects ({err})", "save plain numeric arrays") from None
    if not any("/" in key for key in arrays):
        raise InputError(f"{path} has no '<split>/<input>' arrays (it has {sorted(arrays)[:6]})", f"write it with {LAYOUT}")
    return arrays


def _read(ref: str) -> dict[str, np.ndarray]:
    return _arrays(str(Path(ref).resolve()), Path(ref).stat().st_mtime)


@DATASETS.register
class NpzSplits(DataSource):
    name = "npz"
    description = "splits in one .npz: <split>/<input> arrays (model-ready) and <split>/labels (optional)"
    supports = ("file",)

    def matches(self, ref: str) -> bool:
        return ref.endswith(".npz") and Path(ref).is_file()

    def splits_for(self, ref: str) -> tuple[str, ...]:
        return tuple(sorted({key.split("/")[0] for key in _read(ref) if "/" in key}))

    def labelled(self, ref: str, split: str, spec=None) -> bool:
        if spec is not None and spec.task.kind != "classification":
            return True
        labels = _read(ref).get(f"{split}/labels")
        return labels is not None and bool((labels != UNLABELLED).all())

    def load(self, split: str, ref: str, spec=None) -> Split:
        arrays = _read(ref)
        inputs = {key.split("/", 1)[1]: value for key, value in arrays.items()
                  if key.startswith(f"{split}/") and not key.endswith("/labels")}
        if not inputs:
            raise InputError(f"{ref} has no split {split!r}", f"write it with {LAYOUT}")
        rows = len(next(iter(inputs.values())))  # a split without labels is unlabelled (distillation, calibration)
        return Split(split, inputs, arrays.get(f"{split}/labels", np.full(rows, UNLABELLED, np.int64)))
