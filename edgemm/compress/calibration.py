"""Calibration data: real samples covering every modality, checked against the model contract."""
from __future__ import annotations

import numpy as np

from edgemm.data.datasets import Split, load_split
from edgemm.errors import InputError
from edgemm.runtime.evaluate import eval_batch_size
from edgemm.spec import ModelSpec


# A calibrator holds every intermediate tensor of a few batches: 32 images of 224x224 made that GBs.
CALIBRATION_BATCH_INPUT_BYTES = 4 * 2**20


def check_calibration(spec: ModelSpec, split: Split, batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
    """Batches for a calibrator; refuses NaN, wrong dtypes/shapes and a missing modality by name."""
    if len(split) == 0:
        raise InputError("calibration data is empty", "give at least one sample per batch")
    missing = [n for n in spec.input_names if n not in split.inputs]
    if missing:
        raise InputError(f"calibration data lacks input(s) {missing} "
                         f"({', '.join(spec.input(n).modality for n in missing)})",
                         "calibrate on samples that cover every modality, or the quantizer sees no ranges there")
    batch_size = batch_size or eval_batch_size(split, 32, CALIBRATION_BATCH_INPUT_BYTES)
    feeds = []
    for start, (inputs, _) in zip(range(0, len(split), batch_size), split.batches(batch_size)):
        feed = {n: inputs[n] for n in spec.input_names}
        try:
            spec.check_inputs(feed)
        except InputError as err:
            raise InputError(f"calibration batch at sample {start}: {err.args[0]}", err.hint) from None
        feeds.append(feed)
    return feeds


def calibration_feeds(spec: ModelSpec, dataset: str, split: str, samples: int) -> list[dict[str, np.ndarray]]:
    data = load_split(dataset, split, spec)
    return check_calibration(spec, data.take(np.arange(min(samples, len(data)))))
