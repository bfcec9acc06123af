"""A data format in one file: an ``.npz`` with one array per split and input (``test/image``)
and the labels (``test/labels``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemm.data.datasets import DATASETS, DataSource, Split


@DATASETS.register
class NpzSplits(DataSource):
    name = "npz"
    description = "labelled splits in one .npz: <split>/<input> and <split>/labels (test-only)"

    def matches(self, ref: str) -> bool:
        return ref.endswith(".npz") and Path(ref).is_file()

    def splits_for(self, ref: str) -> tuple[str, ...]:
        with np.load(ref, allow_pickle=False) as data:
            return tuple(sorted({key.split("/")[0] for key in data.files if key.endswith("/labels")}))

    def load(self, split: str, ref: str) -> Split:
        with np.load(ref, allow_pickle=False) as data:
            inputs = {key.split("/", 1)[1]: data[key] for key in data.files
                      if key.startswith(f"{split}/") and not key.endswith("/labels")}
            return Split(split, inputs, data[f"{split}/labels"])
