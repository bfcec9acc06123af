"""A named dataset in one file: any model's inputs drawn from its contract with a seed per split, every
label 0 (test-only: plumbing, not learning)."""
from __future__ import annotations

import numpy as np

from edgemm.data.datasets import DATASETS, DataSource, Split

SPLITS = ("train", "val", "test")


@DATASETS.register
class SeededRandom(DataSource):
    name = "seeded-random"
    description = "contract-generated inputs, a seed per split, all labels 0 (test-only)"
    splits = SPLITS

    def load(self, split: str, ref: str, spec=None) -> Split:
        inputs = spec.example_inputs({"batch": 24}, seed=SPLITS.index(split))
        return Split(split, inputs, np.zeros(24, np.int64))
