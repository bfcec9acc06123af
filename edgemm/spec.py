"""The model contract every stage reads.

A :class:`ModelSpec` says what a model takes (one :class:`InputSpec` per
input, each with its modality, dtype, shape with *named* dynamic axes and
value range or vocabulary), what it returns and how it is scored. Export reads
it for dynamic shapes, validation and benchmarks for example inputs, and every
entry point checks user-supplied inputs against it.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Callable, Literal, Mapping, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgemm.errors import InputError, ModelRunFailed

Modality = Literal["image", "audio", "text", "signal", "tabular", "tensor"]
DType = Literal["float32", "float16", "int64", "int32", "uint8", "bool"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AxisRange(_Strict):
    """Sizes a dynamic axis may take: ``opt`` is the typical one (TensorRT profiles use all three)."""

    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "AxisRange":
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"axis range needs min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self


# -- how a data column becomes this input (read by data folders, tables and functions) -----------
class ImageFrom(_Strict):
    """An image file (or decoded image) per row: resized to the input's H x W, scaled to [0, 1], then
    ``(x - mean) / std`` per channel. Transparent pixels are laid over ``background``."""

    kind: Literal["image"] = "image"
    column: str = "image"
    size: tuple[int, int] | None = Field(None, description="(height, width); default: the input's fixed H, W")
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    background: float = Field(1.0, ge=0, le=1, description="grey level under transparent pixels (1 = white)")


class TokenizerFrom(_Strict):
    """A text per row, tokenised by a Hugging Face tokenizer; ``field`` picks which of its outputs feeds
    this input, so ``input_ids`` and ``attention_mask`` read one tokenisation of the same column."""

    kind: Literal["tokenizer"] = "tokenizer"
    column: str = "text"
    tokenizer: str = Field(description="a folder holding a Hugging Face tokenizer (tokenizer.json or vocab.txt)")
    field: str = Field("input_ids", description="input_ids | attention_mask | token_type_ids")
    max_length: int | None = Field(None, ge=1, description="truncate to this; default: the sequence axis' max")


class AudioFrom(_Strict):
    """An audio file (or waveform) per row, resampled to ``sample_rate``: the waveform [batch, samples]
    or a log-mel spectrogram [batch, n_mels, frames] (n_mels from the input's shape)."""

    kind: Literal["audio"] = "audio"
    column: str = "audio"
    sample_rate: int = Field(16000, ge=1000)
    features: Literal["waveform", "log-mel"] = "log-mel"
    n_fft: int = Field(400, ge=16)
    hop: int = Field(160, ge=1)
    seconds: float | None = Field(None, gt=0, description="crop or pad every clip to this; default: the longest")
    mean: float = 0.0
    std: float = 1.0


class ColumnFrom(_Strict):
    """A numeric column (a number or a list of numbers per row), cast to the input's dtype."""

    kind: Literal["column"] = "column"
    column: str


Preprocess = Annotated[Union[ImageFrom, TokenizerFrom, AudioFrom, ColumnFrom], Field(discriminator="kind")]


class InputSpec(_Strict):
    name: str
    modality: Modality
    dtype: DType
    shape: tuple[int | str, ...] = Field(description="ints are fixed sizes, strings name dynamic axes")
    value_range: tuple[float, float] | None = None
    vocab_size: int | None = Field(default=None, description="token inputs: ids lie in [0, vocab_size)")
    pad_id: int | None = None
    preprocess: Preprocess | None = Field(None, description="how a dataset column becomes this input")
    tower: str | None = Field(None, description="inputs read by one encoder share a tower name "
                                                "(input_ids + attention_mask); default: the input's own name")
    description: str = ""

    @property
    def tower_name(self) -> str:
        return self.tower or self.name

    @property
    def empty_value(self) -> int:
        """What this input holds when its modality is missing: the pad id of token-id inputs (those with a
        vocabulary), zeros elsewhere, in the model's input space (an attention mask of zeros; for a normalised
        image or log-mel, the mean level), as the data readers pad."""
        return self.pad_id if self.pad_id is not None and self.vocab_size is not None else 0

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)


class OutputSpec(_Strict):
    name: str
    shape: tuple[int | str, ...]
    description: str = ""


class TaskSpec(_Strict):
    kind: Literal["classification", "embedding"]
    output: str = Field(description="name of the output the metric reads")
    num_classes: int | None = None
    labels: tuple[str, ...] | None = Field(None, description="class names, in index order")
    label_column: str = Field("label", description="the column of a data folder or table holding the labels")

    @property
    def metric(self) -> str:
        return "accuracy" if self.kind == "classification" else "cosine"


class ModelSpec(_Strict):
    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    task: TaskSpec
    axes: dict[str, AxisRange] = Field(default_factory=dict)
    dataset: str | None = Field(default=None, description="the data: a registered dataset's name, a data folder, "
                                                          "an .npz or module:function (see `edgemm list datasets`)")
    trained: bool = Field(False, description="the factory loaded trained (or pretrained) weights: accuracy is "
                                             "meaningful without --weights")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        axis_names = {d for i in self.inputs for d in i.shape if isinstance(d, str)}
        missing = axis_names - set(self.axes)
        if missing:
            raise ValueError(f"dynamic axes {sorted(missing)} need a min/opt/max entry in 'axes'")
        if self.task.output not in {o.name for o in self.outputs}:
            raise ValueError(f"task output {self.task.output!r} is not one of the outputs")
        return self

    # -- lookups ---------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def modalities(self) -> dict[str, str]:
        return {i.name: i.modality for i in self.inputs}

    @property
    def towers(self) -> dict[str, list[str]]:
        """Tower name -> the inputs it reads, in input order."""
        groups: dict[str, list[str]] = {}
        for spec in self.inputs:
            groups.setdefault(spec.tower_name, []).append(spec.name)
        return groups

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def sizes(self, which: Literal["min", "opt", "max"] = "opt", **overrides: int) -> dict[str, int]:
        sizes = {name: getattr(rng, which) for name, rng in self.axes.items()}
        sizes.update(overrides)
        return sizes

    # -- example inputs ----------------------------------------------------------------------
    def example_inputs(self, sizes: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Valid random inputs, one per input, drawn by its modality's generator."""
        rng = np.random.default_rng(seed)
        full = self.sizes()
        full.update(sizes or {})
        return {spec.name: GENERATORS.get(spec.modality, _generic)(spec, spec.concrete_shape(full), rng)
                for spec in self.inputs}

    # -- input checks ------------------------------------------------------------------------
    def check_inputs(self, feed: Mapping[str, Any]) -> dict[str, int]:
        """Raise :class:`InputError` naming the first problem; return the axis sizes seen."""
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            what = ", ".join(f"{n} ({self.input(n).modality})" for n in missing)
            raise InputError(f"missing input(s): {what}; model {self.name!r} expects {self.input_names}",
                             "pass every input; a missing modality is fed as its empty value "
                             "(zeros for images/audio, all pad ids for text)")
        extra = [n for n in feed if n not in self.input_names]
        if extra:
            raise InputError(f"unexpected input(s) {extra}; model {self.name!r} expects {self.input_names}",
                             "rename or drop them")
        seen: dict[str, int] = {}
        owners: dict[str, str] = {}  # axis -> the first input that set its size
        for spec in self.inputs:
            _check_one(spec, np.asarray(_to_numpy(feed[spec.name])), seen, self.axes, owners)
        return seen

    def axis_sizes(self, feed: Mapping[str, Any]) -> dict[str, int]:
        """The size of each named axis in a feed, as its inputs' shapes give them (no range checks)."""
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            for want, got in zip(spec.shape, np.shape(feed[spec.name]) if spec.name in feed else ()):
                if isinstance(want, str):
                    sizes.setdefault(want, got)
        return sizes

    def check_outputs(self, outputs: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
        """Raise :class:`ModelRunFailed` when a model's outputs are not what its contract declares
        (missing, another rank or size, integer logits): scores computed from them would be wrong."""
        for out in self.outputs:
            if out.name not in outputs:
                raise ModelRunFailed(f"model {self.name!r} returned no output {out.name!r} (it returned "
                                     f"{sorted(outputs)})", "return the outputs the contract declares, in its order")
            array = np.asarray(outputs[out.name])
            want = tuple(_declared_size(d, axis, sizes) for axis, d in enumerate(out.shape))
            fits = array.ndim == len(want) and all(w is None or w == g for w, g in zip(want, array.shape))
            if not fits:
                raise ModelRunFailed(f"model {self.name!r} output {out.name!r} has shape {list(array.shape)}, but "
                                     f"its contract declares {_shape_text(out.shape)} (with {dict(sizes)} here)",
                                     "fix the forward or the contract's outputs (`edgemm info MODEL`)")
            if out.name == self.task.output and self.task.kind == "classification":
                classes = self.task.num_classes
                if array.dtype.kind != "f":
                    raise ModelRunFailed(f"model {self.name!r} returns {array.dtype} scores in {out.name!r}",
                                         "return float logits or probabilities")
                if classes and array.shape[-1] != classes:
                    raise ModelRunFailed(f"model {self.name!r} scores {array.shape[-1]} classes in {out.name!r}, "
                                         f"but its contract says num_classes={classes}",
                                         "fix the contract's task.num_classes or the model's head")

    # -- (de)serialisation ----------------------------------------------------------------
    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelSpec":
        return cls.model_validate(json.loads(text))


def _declared_size(dim: int | str, axis: int, sizes: Mapping[str, int]) -> int | None:
    """The size an output axis must have, None where it may vary: a named axis other than the batch can be
    resized by the model (audio frames downsampled), and a fixed leading 1 is how many exporters write
    a dynamic batch."""
    if isinstance(dim, str):
        return sizes.get(dim) if axis == 0 else None
    return None if axis == 0 and dim == 1 else dim


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def _check_one(spec: InputSpec, array: np.ndarray, seen: dict[str, int], axes: Mapping[str, AxisRange],
               owners: dict[str, str]) -> None:
    if str(array.dtype) != spec.dtype:
        raise InputError(f"input {spec.name!r} has dtype {array.dtype}, expected {spec.dtype}",
                         f"cast it, e.g. array.astype(np.{spec.dtype})")
    if array.ndim != len(spec.shape):
        raise InputError(f"input {spec.name!r} has shape {tuple(array.shape)} (rank {array.ndim}), "
                         f"expected {_shape_text(spec.shape)} (rank {len(spec.shape)})",
                         "reshape it to the expected layout")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if isinstance(want, int) and want != got:
            raise InputError(f"input {spec.name!r} has size {got} on axis {axis}, expected {want} "
                             f"(shape {_shape_text(spec.shape)})", "resize or reshape the input")
        if isinstance(want, str):
            if want in seen and seen[want] != got:
                raise InputError(f"axis {want!r} is {seen[want]} in input {owners[want]!r} but {got} in {spec.name!r}",
                                 f"all inputs must share the same {want!r} size")
            rng = axes.get(want)
            if rng and not rng.min <= got <= rng.max:
                raise InputError(f"input {spec.name!r}: axis {want!r} = {got} is outside [{rng.min}, {rng.max}]",
                                 f"pad or crop to a size in [{rng.min}, {rng.max}]")
            seen[want] = got
            owners.setdefault(want, spec.name)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"input {spec.name!r} contains NaN or infinite values",
                         "clean the data; a missing modality is zeros, not NaN")
    if spec.vocab_size is not None and array.size and (array.min() < 0 or array.max() >= spec.vocab_size):
        raise InputError(f"input {spec.name!r} has token ids outside [0, {spec.vocab_size})",
                         "tokenise with the model's own vocabulary")


def _shape_text(shape: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# -- example-input generators, one per modality -----------------------------------------------
Generator = Callable[[InputSpec, tuple[int, ...], np.random.Generator], np.ndarray]
GENERATORS: dict[str, Generator] = {}


def register_generator(modality: str) -> Callable[[Generator], Generator]:
    def deco(fn: Generator) -> Generator:
        GENERATORS[modality] = fn
        return fn
    return deco


def _generic(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    field = spec.preprocess.field if isinstance(spec.preprocess, TokenizerFrom) else None
    if field in ("attention_mask", "token_type_ids"):  # a mask of random ids is no mask: attend to all
        return np.full(shape, 1 if field == "attention_mask" else 0, dtype=spec.dtype)
    if spec.vocab_size is not None:
        low = 0 if spec.pad_id is None else min(spec.pad_id + 1, spec.vocab_size - 1)
        return rng.integers(low, spec.vocab_size, size=shape).astype(spec.dtype)
    if spec.dtype == "bool":
        return rng.random(shape) > 0.5
    if spec.dtype in ("int64", "int32", "uint8"):
        lo, hi = spec.value_range or (0, 255 if spec.dtype == "uint8" else 100)
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(spec.dtype)
    lo, hi = spec.value_range or (-3.0, 3.0)
    return np.clip(rng.standard_normal(shape), lo, hi).astype(spec.dtype)


@register_generator("image")
def _image(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.dtype == "uint8":
        return rng.integers(0, 256, size=shape).astype(np.uint8)
    lo, hi = spec.value_range or (0.0, 1.0)
    return rng.uniform(lo, hi, size=shape).astype(spec.dtype)
