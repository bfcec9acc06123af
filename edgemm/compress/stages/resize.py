"""The ``resize`` stage: a tower's images at a lower resolution (the resolution multiplier of MobileNet and
EfficientNet). A CNN tower's cost falls with the pixel count, and no weight is removed: 160x160 is half the
work of 224x224. The contract's image size changes, so every later command (export, calibration, gates,
bench, predict) reads and resizes the data to it. Accuracy drops until a ``distill`` stage after this one
trains the student at its new size against the teacher at the original size (the distill stage resizes
each batch for the student), which is what makes the lower resolution pay.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from edgemm.compress.stage import STAGES, Artifact, Context, Stage, StageConfig
from edgemm.data.datasets import find_source
from edgemm.errors import ConfigError
from edgemm.lazy import lazy_import
from edgemm.models.registry import save_model
from edgemm.runtime.convert import named_outputs, to_tensors
from edgemm.spec import ImageFrom, InputSpec, ModelSpec

torch = lazy_import("torch")

Size = Annotated[int, Field(ge=8)] | tuple[Annotated[int, Field(ge=8)], Annotated[int, Field(ge=8)]]


class ResizeConfig(StageConfig):
    stage: Literal["resize"]
    size: dict[str, Size] = Field(description="per tower: the new image size, one side (square) or [height, width]; "
                                              "every image input of the tower takes it")


@STAGES.register
class ResizeStage(Stage):
    name = "resize"
    description = "a tower's images at a lower resolution (the contract's image size changes; distill after it)"
    config = ResizeConfig
    consumes = produces = "torch"
    requires = ("torch",)
    gate_fix = "resize less (a size closer to the original), or add a distill stage after it"

    def check_model(self, config: ResizeConfig, spec: ModelSpec, dataset: str, split: str,
                    module: Any = None) -> None:
        """The model runs at the new size, and the data comes at it: image files do (a data folder resizes
        them to the contract), arrays do not (an .npz, a function, a registered dataset of arrays). Any other
        problem with the data is left to the data checks, which name it."""
        resized = resized_spec(spec, config.size)
        if module is not None:
            check_forward(module, resized, spec)
        rows = find_source(dataset).load_rows(split, dataset, resized, 2).inputs
        for name, (_, size) in changed_sizes(spec, resized).items():
            got = list(rows[name].shape[2:]) if name in rows else size  # a missing input: the data checks name it
            if got != size:
                raise ConfigError(f"resize: data {dataset} gives input {name!r} at {got}, not at the new size {size}",
                                  "resize needs images read from files, which are resized to the contract's size "
                                  "(a data folder); arrays come at the size they were saved at")

    def run(self, config: ResizeConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        model = artifact.load()
        before = model.spec
        model.spec = resized_spec(before, config.size)
        check_forward(model.module, model.spec, before)
        save_model(model, ctx.stage_dir)
        changed = {name: {"from": old, "to": new} for name, (old, new) in changed_sizes(before, model.spec).items()}
        return Artifact("torch", ctx.stage_dir), {"resized": changed}


def changed_sizes(before: ModelSpec, after: ModelSpec) -> dict[str, tuple[list, list]]:
    """Input name -> ([height, width] before, after), for the inputs the resize changed."""
    return {i.name: (list(before.input(i.name).shape[2:]), list(i.shape[2:])) for i in after.inputs
            if i.shape != before.input(i.name).shape}


def resized_spec(spec: ModelSpec, sizes: dict[str, int | tuple[int, int]]) -> ModelSpec:
    """The contract with each named tower's image inputs at the new (height, width)."""
    unknown = sorted(set(sizes) - set(spec.towers))
    if unknown:
        raise ConfigError(f"resize.size names {unknown}: not a tower of model {spec.name!r}",
                          f"its towers are {sorted(spec.towers)}")
    inputs = []
    for inp in spec.inputs:
        size = sizes.get(inp.tower_name)
        inputs.append(inp if size is None else _resized(inp, (size, size) if isinstance(size, int) else tuple(size)))
    for tower in sizes:
        if not any(i.tower_name == tower and i.modality == "image" for i in spec.inputs):
            raise ConfigError(f"resize.size names tower {tower!r}, which reads no image input",
                              "resize towers that read images ([batch, channels, height, width])")
    return spec.model_copy(update={"inputs": tuple(inputs)})


def _resized(inp: InputSpec, size: tuple[int, int]) -> InputSpec:
    if inp.modality != "image":
        return inp  # a tower's other inputs (none in the usual image tower) keep their shapes
    if len(inp.shape) != 4 or not all(isinstance(d, int) for d in inp.shape[2:]):
        raise ConfigError(f"resize: input {inp.name!r} has shape {list(inp.shape)}; the stage resizes images of a "
                          "fixed [batch, channels, height, width]",
                          "give the contract fixed height and width, or leave this tower out of resize.size")
    preprocess = inp.preprocess
    if isinstance(preprocess, ImageFrom) and preprocess.size is not None:  # an explicit read size follows the input
        preprocess = preprocess.model_copy(update={"size": size})
    note = f"read at {size[0]}x{size[1]} (resize stage; built for {inp.shape[2]}x{inp.shape[3]})"
    description = f"{inp.description}; {note}" if inp.description else note  # e.g. "RGB 224x224" would mislead
    return inp.model_copy(update={"shape": (*inp.shape[:2], *size), "preprocess": preprocess,
                                  "description": description})


def check_forward(module: Any, spec: ModelSpec, before: ModelSpec) -> None:
    """The module must take the new size and give outputs of the contract's shapes (a ViT's position
    embeddings, or a Linear after a Flatten, fix the input size: say so before any stage runs, not at export)."""
    feed = spec.example_inputs({**spec.sizes("min"), "batch": 2} if "batch" in spec.axes else None)
    try:
        with torch.no_grad():
            outputs = named_outputs(spec, module.eval()(*to_tensors(spec, feed)))
        spec.check_outputs(outputs, spec.axis_sizes(feed))
    except Exception as err:  # a shape error from deep inside the model: the user needs which input and why
        sizes = {name: f"{old} -> {new}" for name, (old, new) in changed_sizes(before, spec).items()}
        first = (str(err).splitlines() or [type(err).__name__])[0]  # a bare assert has no message
        raise ConfigError(f"resize: model {spec.name!r} does not run at the new size {sizes}: {first[:300]}",
                          "its tower needs the size it was built for (position embeddings, a Flatten into a "
                          "Linear): leave it out of resize.size, or pick a size its layers accept") from None
