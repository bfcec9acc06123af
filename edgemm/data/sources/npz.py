"""Labelled splits in one ``.npz``: an array per split and input (``test/image``, ``test/input_ids``)
and the labels (``test/labels``). Arrays are model-ready: no preprocessing, nothing unpickled."""
from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgemm.data.datasets import DATASETS, DataSource, Split
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
    if not any(key.endswith("/labels") for key in arrays):
        raise InputError(f"{path} has no '<split>/labels' array (it has {sorted(arrays)[:6]})", f"write it with {LAYOUT}")
    return arrays


def _read(ref: str) -> dict[str, np.ndarray]:
    return _arrays(str(Path(ref).resolve()), Path(ref).stat().st_mtime)


@DATASETS.register
class NpzSplits(DataSource):
    name = "npz"
    description = "labelled splits in one .npz: <split>/<input> arrays (model-ready) and <split>/labels"
    supports = ("file",)

    def matches(self, ref: str) -> bool:
        return ref.endswith(".npz") and Path(ref).is_file()

    def splits_for(self, ref: str) -> tuple[str, ...]:
        return tuple(sorted({key.split("/")[0] for key in _read(ref) if key.endswith("/labels")}))

    def load(self, split: str, ref: str, spec=None) -> Split:
        arrays = _read(ref)
        inputs = {key.split("/", 1)[1]: value for key, value in arrays.items()
                  if key.startswith(f"{split}/") and not key.endswith("/labels")}
        return Split(split, inputs, arrays[f"{split}/labels"])
