"""The one way edgemm scores a model: task outputs of a session over a split, accuracy, fidelity.

Used by export validation, compression gates (INC's tuning included), training's
early stopping, ``predict`` and ``bench``: a figure means the same thing everywhere.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgemm import metrics
from edgemm.data.readers import UNLABELLED
from edgemm.errors import ConfigError, InputError, NonFiniteOutputs

if TYPE_CHECKING:
    from edgemm.data.datasets import Split
    from edgemm.runtime.session import Session

EVAL_BATCH = 64
BATCH_INPUT_BYTES = 16 * 2**20  # activations grow with the input: 64 images of 224x224 held an ORT arena of GBs


def eval_batch_size(data: "Split", limit: int = EVAL_BATCH, input_bytes: int = BATCH_INPUT_BYTES) -> int:
    """At most ``limit`` samples, and at most ``input_bytes`` of input per batch (large images stream smaller)."""
    per_sample = sum(array[:1].nbytes for array in data.inputs.values()) or 1
    return max(1, min(limit, input_bytes // per_sample))


def task_outputs(session: "Session", data: "Split", batch_size: int | None = None) -> np.ndarray:
    """The task output (``spec.task.output``) of ``session`` over every sample of ``data``, streamed in batches
    (each without the text padding none of its rows uses)."""
    spec = session.spec
    data = data.for_inputs(spec.input_names)
    if len(data) == 0:
        raise ConfigError(f"split {data.name!r} is empty", "evaluate on a split with samples")
    batch_axis = spec.axes.get("batch")
    size = min(batch_size or eval_batch_size(data), batch_axis.max if batch_axis else len(data))  # inside the contract
    outputs = np.concatenate([run_checked(session, data.take(slice(start, start + size)).trimmed(spec).inputs)
                              [spec.task.output] for start in range(0, len(data), size)])
    return require_finite(outputs, session, f"split {data.name!r}")


def run_checked(session: "Session", feed: dict[str, np.ndarray], finite: bool = False) -> dict[str, np.ndarray]:
    """One batch whose outputs are checked against the contract (a score from the wrong shape would mislead),
    and with ``finite`` for NaN/inf too."""
    outputs = session.run(feed)
    session.spec.check_outputs(outputs, session.spec.axis_sizes(feed))
    for name, values in outputs.items() if finite else ():
        require_finite(values, session, f"output {name!r} of these inputs")
    return outputs


def require_finite(values: np.ndarray, session: "Session", on: str) -> np.ndarray:
    """Outputs a score may be computed from: NaN or inf is an error (exit 3), never a silent 0 % or 'cosine 1.0'."""
    bad = metrics.non_finite_count(values)
    if bad:
        raise NonFiniteOutputs(f"model {session.spec.name!r} ({session.backend}) outputs {bad} NaN/inf value(s) of "
                               f"{values.size} on {on}",
                               "its weights or an input are broken (NaN weights, overflow in fp16/int8 ranges): "
                               "check the weights file, or compare with the float model")
    return values


def accuracy(session: "Session", data: "Split", batch_size: int | None = None) -> float:
    """Top-1 accuracy of a classifier session on a labelled split."""
    return float(correct(session, data, batch_size).mean())


def correct(session: "Session", data: "Split", batch_size: int | None = None) -> np.ndarray:
    """Per sample of a labelled split: did the classifier's top-1 match the label (paired gate statistics)."""
    if session.spec.task.kind != "classification":
        raise ConfigError(f"model {session.spec.name!r} is a {session.spec.task.kind} model: it has no accuracy",
                          "score it by fidelity to a reference instead")
    return correct_of(task_outputs(session, data, batch_size), data, session.spec.name)


def accuracy_of(scores: np.ndarray, data: "Split", model: str) -> float:
    """Top-1 accuracy of task outputs on a split's labels (see :func:`correct_of`)."""
    return float(correct_of(scores, data, model).mean())


def correct_of(scores: np.ndarray, data: "Split", model: str) -> np.ndarray:
    """Per-sample top-1 hits of task outputs on a split's labels, which must be class indices the model scores
    (labels of 99 for 3 classes would score 0 % and look like a bad model, not bad data)."""
    labels = np.asarray(data.labels)
    if labels.ndim != 1:
        raise InputError(f"split {data.name!r} has labels of shape {labels.shape}; a classifier's labels are one "
                         f"class index per row", "give labels as a 1-D column of class indices")
    if labels.dtype.kind in "bf" and np.array_equal(labels, np.round(labels)):  # 0./1./2. or True/False: indices
        labels = labels.astype(np.int64)
    unlabelled = int((labels == UNLABELLED).sum()) if labels.dtype.kind in "iu" else 0
    if unlabelled:
        raise InputError(f"split {data.name!r}: {unlabelled} of {len(labels)} rows have no label, so accuracy cannot "
                         f"be scored on it", "label every row of a split that is scored; unlabelled rows serve "
                         "calibration and distillation (distill.unlabelled_split)")
    classes = scores.shape[-1]
    if labels.dtype.kind not in "iu" or labels.min(initial=0) < 0 or labels.max(initial=0) >= classes:
        found = sorted(set(labels.tolist()))
        raise InputError(f"split {data.name!r} has labels {found[:8]}{' ...' if len(found) > 8 else ''}, "
                         f"but model {model!r} scores classes 0..{classes - 1}",
                         "labels are class indices (integers); map names through the contract's task.labels")
    return metrics.top1_hits(scores, labels)


def fidelity(reference: np.ndarray, candidate: np.ndarray, classification: bool = True) -> dict[str, float]:
    """How closely a candidate's outputs follow a reference's on the same inputs."""
    result = {"cosine": metrics.mean_cosine(reference, candidate)}
    if classification:
        result["top1_agreement"] = metrics.top1_agreement(reference, candidate)
    return result
