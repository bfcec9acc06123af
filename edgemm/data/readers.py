"""Columns of a table (a data folder's metadata, a function's rows) -> model inputs, as the contract says.

Each input's ``preprocess`` (``spec.py``: ImageFrom, TokenizerFrom, AudioFrom, ColumnFrom) names the
column it reads and how; a reader per kind turns the column's values into one batch-first array.
Files are named relative to the data folder; every problem names the row, the file and the fix.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgemm.data.preprocess import fit_length, log_mel_features
from edgemm.errors import InputError
from edgemm.lazy import lazy_import
from edgemm.spec import AudioFrom, ColumnFrom, ImageFrom, InputSpec, ModelSpec, TaskSpec, TokenizerFrom

PIL_Image = lazy_import("PIL.Image", "pip install pillow")
soundfile = lazy_import("soundfile", "pip install 'edgemm[data]'")
transformers = lazy_import("transformers", "pip install 'edgemm[data]'")
scipy_signal = lazy_import("scipy.signal", "pip install scipy")


@dataclass
class ReadContext:
    spec: ModelSpec
    root: Path  # relative file names are relative to this folder
    tokenised: dict[tuple, Any] = field(default_factory=dict)  # one tokenisation per (column, tokenizer, length)


Reader = Callable[[Sequence[Any], InputSpec, Any, ReadContext], np.ndarray]


def build_inputs(columns: dict[str, Sequence[Any]], spec: ModelSpec, root: Path) -> dict[str, np.ndarray]:
    """One array per model input, read from the columns as each input's ``preprocess`` says."""
    ctx = ReadContext(spec, root)
    inputs = {}
    for inp in spec.inputs:
        how = inp.preprocess
        if how is None:
            raise InputError(f"input {inp.name!r} of model {spec.name!r} does not say how to read it from data",
                             "set preprocess= on its InputSpec: ImageFrom, TokenizerFrom, AudioFrom or ColumnFrom "
                             "(see README, 'Compress your own model')")
        if how.column not in columns:
            raise InputError(f"the data has no column {how.column!r} for input {inp.name!r} "
                             f"(it has {sorted(columns)})", "add the column, or point preprocess.column at one")
        inputs[inp.name] = READERS[how.kind](columns[how.column], inp, how, ctx)
    return inputs


def needed_columns(spec: ModelSpec) -> set[str]:
    return {inp.preprocess.column for inp in spec.inputs if inp.preprocess is not None}


UNLABELLED = -1  # the label of a row without one: distillation learns from it, accuracy refuses it


def is_blank_label(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (float, np.floating)) and bool(np.isnan(value)))


def read_labels(values: Sequence[Any], task: TaskSpec) -> np.ndarray:
    """Class indices: integers as they are, names through ``task.labels``; an empty cell is ``UNLABELLED``."""
    values = list(values)
    if task.kind != "classification":
        return np.zeros(len(values), np.int64)
    blank = np.asarray([is_blank_label(v) for v in values], bool)
    if blank.any():
        labels = np.full(len(values), UNLABELLED, np.int64)
        if not blank.all():
            labels[~blank] = read_labels([v for v, b in zip(values, blank) if not b], task)
        return labels
    if all(isinstance(v, (float, np.floating)) and float(v).is_integer() for v in values):
        values = [int(v) for v in values]  # a CSV column of numbers with empty cells is read as floats
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        labels = np.asarray(values, np.int64)
        classes = task.num_classes or (len(task.labels) if task.labels else None)
        if classes and len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise InputError(f"labels outside [0, {classes}) in column {task.label_column!r}",
                             "number classes from 0, or give class names")
        return labels
    if not task.labels:
        raise InputError(f"column {task.label_column!r} holds class names but the contract lists none",
                         "set TaskSpec(labels=(...names in index order...))")
    index = {name: i for i, name in enumerate(task.labels)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise InputError(f"labels {unknown[:5]} in column {task.label_column!r} are not among the model's classes "
                         f"{list(task.labels)[:10]}", "drop those rows, or train the model with those classes")
    return np.asarray([index[str(v)] for v in values], np.int64)


# -- images ------------------------------------------------------------------------------------
def read_images(values: Sequence[Any], inp: InputSpec, how: ImageFrom, ctx: ReadContext) -> np.ndarray:
    if len(inp.shape) != 4 or not isinstance(inp.shape[1], int):
        raise InputError(f"input {inp.name!r}: ImageFrom reads [batch, channels, height, width] inputs with a "
                         f"fixed channel count, not {list(inp.shape)}", "give the input that layout")
    channels = inp.shape[1]
    size = how.size or inp.shape[2:4]
    if not all(isinstance(d, int) for d in size):
        raise InputError(f"input {inp.name!r} has dynamic height/width", "set ImageFrom(size=(height, width))")
    height, width = size
    for name, values_ in (("mean", how.mean), ("std", how.std)):
        if len(values_) not in (1, channels):
            raise InputError(f"input {inp.name!r}: ImageFrom.{name} has {len(values_)} values for {channels} "
                             "channel(s)", f"give one {name} or one per channel")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InputError(f"input {inp.name!r} has {channels} channels; images are read as 1 (grey) or 3 (RGB)",
                         "use ColumnFrom with model-ready arrays for other layouts")
    batch = np.empty((len(values), channels, height, width), np.float32)
    for row, value in enumerate(values):
        image = _flatten_alpha(_open_image(value, ctx.root, row), how.background)
        pixels = np.asarray(image.convert(mode).resize((width, height), PIL_Image.BILINEAR), np.float32) / 255.0
        batch[row] = pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)
    batch -= np.asarray(how.mean, np.float32).reshape(-1, 1, 1)  # in place: 4,000 images are 2.4 GB, and
    batch /= np.asarray(how.std, np.float32).reshape(-1, 1, 1)   # two temporaries made that a 7 GB peak
    return batch.astype(inp.dtype, copy=False)


def _open_image(value: Any, root: Path, row: int) -> Any:
    if hasattr(value, "convert"):  # already a PIL image
        return value
    source = _file_or_bytes(value, root, row)
    try:
        image = PIL_Image.open(source)
        image.load()
        return image
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        raise InputError(f"row {row}: cannot read image {_name(value)} ({err})", "replace or drop the file") from None


def _flatten_alpha(image: Any, background: float) -> Any:
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        base = PIL_Image.new("RGBA", rgba.size, (round(255 * background),) * 3 + (255,))
        return PIL_Image.alpha_composite(base, rgba).convert("RGB")
    return image


# -- text ----------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def load_tokenizer(folder: str) -> Any:
    if not Path(folder).is_dir():
        raise InputError(f"tokenizer folder {folder} does not exist",
                         "point TokenizerFrom(tokenizer=...) at a folder saved with tokenizer.save_pretrained()")
    try:
        # trust_remote_code=False: a folder named in a downloaded contract must not run (or prompt to run) code
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as err:
        raise InputError(f"cannot load a tokenizer from {folder} ({str(err)[:200]})",
                         "save one there with tokenizer.save_pretrained()") from None


def tokenize(values: Sequence[Any], inp: InputSpec, how: TokenizerFrom, ctx: ReadContext) -> np.ndarray:
    seq_axis = inp.shape[1] if len(inp.shape) == 2 else None
    axis = ctx.spec.axes.get(seq_axis) if isinstance(seq_axis, str) else None
    max_length = how.max_length or (axis.max if axis else seq_axis if isinstance(seq_axis, int) else 512)
    key = (how.column, how.tokenizer, max_length)
    if key not in ctx.tokenised:
        tokenizer = load_tokenizer(how.tokenizer)
        texts = ["" if v is None else str(v) for v in values]
        # Pad to the split's longest text (not to max_length): latency is then timed at real lengths.
        padding = "max_length" if isinstance(seq_axis, int) else "longest"
        try:
            ctx.tokenised[key] = tokenizer(texts, padding=padding, truncation=True, max_length=max_length,
                                           return_tensors="np")
        except Exception as err:  # no pad token, a slow tokenizer without numpy support...
            raise InputError(f"tokenizer {how.tokenizer} failed on column {how.column!r}: {str(err)[:200]}",
                             "save a tokenizer that pads (tokenizer.pad_token = ...; save_pretrained)") from None
    encoded = ctx.tokenised[key]
    if how.field not in encoded:
        raise InputError(f"input {inp.name!r}: the tokenizer gives {sorted(encoded)}, not {how.field!r}",
                         "set TokenizerFrom(field=...) to one of them")
    array = np.asarray(encoded[how.field]).astype(inp.dtype)
    if axis and array.shape[1] < axis.min:  # shorter than the model allows: pad (padding id / masked out)
        fill = 0 if how.field != "input_ids" else (inp.pad_id or 0)
        array = np.pad(array, ((0, 0), (0, axis.min - array.shape[1])), constant_values=fill)
    return array


# -- audio ---------------------------------------------------------------------------------------
def read_audio(values: Sequence[Any], inp: InputSpec, how: AudioFrom, ctx: ReadContext) -> np.ndarray:
    waves = [_waveform(value, how.sample_rate, ctx.root, row) for row, value in enumerate(values)]
    length = int(how.seconds * how.sample_rate) if how.seconds else max((len(w) for w in waves), default=1)
    batch = np.stack([fit_length(w, length) for w in waves]) if waves else np.zeros((0, length), np.float32)
    if how.features == "log-mel":
        if len(inp.shape) != 3 or not isinstance(inp.shape[1], int):
            raise InputError(f"input {inp.name!r}: log-mel features are [batch, n_mels, frames], not {list(inp.shape)}",
                             "give the input that layout, or AudioFrom(features='waveform')")
        batch = np.stack([log_mel_features(w, how.sample_rate, how.n_fft, how.hop, inp.shape[1]) for w in batch]) \
            if len(batch) else np.zeros((0, inp.shape[1], 1), np.float32)
    if isinstance(inp.shape[-1], int):  # a fixed frame (or sample) count: crop or pad to it
        batch = fit_length(batch, inp.shape[-1])
    return ((batch - how.mean) / how.std).astype(inp.dtype)


def _waveform(value: Any, rate: int, root: Path, row: int) -> np.ndarray:
    if isinstance(value, dict) and "array" in value:  # already decoded (Hugging Face Audio feature)
        if "sampling_rate" not in value:
            raise InputError(f"row {row}: a waveform without its sampling_rate", "give {'array': ..., 'sampling_rate': N}")
        wave, source_rate = np.asarray(value["array"], np.float32), int(value["sampling_rate"])
    else:
        try:
            wave, source_rate = soundfile.read(_file_or_bytes(value, root, row), dtype="float32", always_2d=True)
        except InputError:
            raise
        except Exception as err:
            raise InputError(f"row {row}: cannot read audio {_name(value)} ({err})",
                             "give wav/flac/ogg files, or replace or drop the file") from None
        wave = wave.mean(axis=1)
    if source_rate != rate:
        common = gcd(source_rate, rate)
        wave = scipy_signal.resample_poly(wave, rate // common, source_rate // common).astype(np.float32)
    return wave


# -- numbers -------------------------------------------------------------------------------------
def read_column(values: Sequence[Any], inp: InputSpec, how: ColumnFrom, ctx: ReadContext) -> np.ndarray:
    try:
        return np.asarray(list(values), dtype=inp.dtype)
    except (ValueError, TypeError) as err:
        raise InputError(f"column {how.column!r} for input {inp.name!r} is not a {inp.dtype} array ({err})",
                         "give numbers, with lists of one length per row") from None


def _file_or_bytes(value: Any, root: Path, row: int) -> Any:
    if isinstance(value, dict):  # Hugging Face Image/Audio feature, not decoded: {"path", "bytes"}
        if value.get("bytes"):
            return io.BytesIO(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value)
    if not isinstance(value, (str, Path)) or not str(value):
        raise InputError(f"row {row}: expected a file name, got {type(value).__name__}", "fill in the column")
    path = Path(value) if Path(value).is_absolute() else root / value
    if not path.is_file():
        raise InputError(f"row {row}: file {path} does not exist", "fix the file name in the metadata")
    return str(path)


def _name(value: Any) -> str:
    return str(value.get("path") if isinstance(value, dict) else value)[:200]


READERS: dict[str, Reader] = {"image": read_images, "tokenizer": tokenize, "audio": read_audio, "column": read_column}
