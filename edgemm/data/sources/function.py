"""Data from code: ``package.module:function`` returning the splits.

The function takes no arguments and returns ``{split: value}`` where a
value is an ``edgemm.Split``, ``(inputs, labels)`` with model-ready arrays, or ``{"columns": {...}}``:
raw columns read as the contract's ``preprocess`` says, like a data folder's. Naming it runs it,
so a reference of this kind recorded inside a model file runs only when named again (``--data``).
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgemm.data.datasets import DATASETS, DataSource, Split
from edgemm.data.readers import build_inputs, read_labels
from edgemm.errors import USER_CODE_ERRORS, InputError
from edgemm.lazy import import_user_module

REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
SHAPES = "{split: Split | (inputs, labels) | {'columns': {...}, 'labels': [...]}}"


@lru_cache(maxsize=2)
def _splits(ref: str) -> dict[str, Any]:
    """Called once per process: a data function may be slow (it reads and preprocesses)."""
    module_name, _, attr = ref.partition(":")
    try:
        function = getattr(import_user_module(module_name), attr)
    except ModuleNotFoundError as err:
        raise InputError(f"cannot import {module_name!r} for data {ref!r} ({err})",
                         "install the package or add its folder to PYTHONPATH") from None
    except AttributeError:
        raise InputError(f"module {module_name!r} has no {attr!r} for data {ref!r}", "check the function name") from None
    except USER_CODE_ERRORS as err:
        raise InputError(f"importing {module_name!r} for data {ref!r} failed: {type(err).__name__}: {err}",
                         f"fix the module; `python -c 'import {module_name}'` shows the traceback") from None
    try:
        splits = function()
    except USER_CODE_ERRORS as err:
        raise InputError(f"data function {ref!r} raised {type(err).__name__}: {str(err)[:300]}",
                         "fix the function") from None
    if not isinstance(splits, dict) or not splits:
        raise InputError(f"data function {ref!r} returned {type(splits).__name__}", f"return {SHAPES}")
    return splits


def _as_split(name: str, value: Any, spec: Any, ref: str) -> Split:
    if isinstance(value, Split):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        inputs, labels = value
        return Split(name, {k: np.asarray(v) for k, v in inputs.items()}, np.asarray(labels))
    if isinstance(value, dict) and "columns" in value:
        if spec is None:
            raise InputError(f"data function {ref!r} returns raw columns; they need the model's contract",
                             "load it for a model")
        columns = value["columns"]
        if not columns:
            raise InputError(f"data function {ref!r}: split {name!r} has no columns", f"return {SHAPES}")
        labels = value.get("labels", columns.get(spec.task.label_column))
        if labels is None:  # unlabelled rows: distillation learns from them, accuracy refuses them by name
            labels = [None] * len(next(iter(columns.values())))
        return Split(name, build_inputs(columns, spec, Path.cwd()), read_labels(labels, spec.task))
    raise InputError(f"data function {ref!r}: split {name!r} is a {type(value).__name__}", f"return {SHAPES}")


@DATASETS.register
class FunctionData(DataSource):
    name = "function"
    description = "package.module:function returning the splits (runs code: only when you name it)"
    runs_code = True
    supports = ("code",)

    def matches(self, ref: str) -> bool:
        return bool(REF.fullmatch(ref)) and not Path(ref).exists()

    def splits_for(self, ref: str) -> tuple[str, ...]:
        return tuple(_splits(ref))

    def load(self, split: str, ref: str, spec=None) -> Split:
        return _as_split(split, _splits(ref)[split], spec, ref)
