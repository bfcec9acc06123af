"""The ``resize`` stage: a tower's images at a lower resolution (the resolution multiplier of MobileNet and
EfficientNet). A CNN tower's cost falls with the pixel count, and no weight is removed: 160x160 is half the
work of 224x224. The contract's image size changes, so every later command (export, calibration, gates,
bench, predict) reads and resizes the data to it. Accuracy drops until a ``distill`` stage after this one
trains the student at its new size against the teacher at the original size (the distill stage resizes
each batch for the student), which is what makes the lower resolution pay.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edgemm.compress.stage import STAGES, Artifact, Context, Stage, StageConfig
from edgemm.data.datasets import load_split
from edgemm.errors import ConfigError, InputError
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel, save_model
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

    def check_model(self, config: ResizeConfig, spec: ModelSpec, dataset: str, split: str) -> None:
        """The data must come at the new size: image files are (a data folder resizes them to the contract),
        arrays are not (an .npz, a function, a registered dataset of arrays)."""
        resized = resized_spec(spec, config.size)
        try:
            resized.check_inputs(load_split(dataset, split, resized).for_inputs(resized.input_names).head(2).inputs)
        except InputError as err:
            raise ConfigError(f"resize: data {dataset} does not come at the new size ({err.args[0]})",
                              "resize needs images read from files, which are resized to the contract's size "
                              "(a data folder); arrays come at the size they were saved at") from None

    def run(self, config: ResizeConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        model = artifact.load()
        before = {i.name: list(i.shape[2:]) for i in model.spec.inputs}
        model.spec = resized_spec(model.spec, config.size)
        check_forward(model, before)
        save_model(model, ctx.stage_dir)
        changed = {i.name: {"from": before[i.name], "to": list(i.shape[2:])} for i in model.spec.inputs
                   if list(i.shape[2:]) != before[i.name]}
        return Artifact("torch", ctx.stage_dir), {"resized": changed}


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


def check_forward(model: LoadedModel, before: dict[str, list]) -> None:
    """The module must take the new size and give outputs of the contract's shapes (a ViT's position
    embeddings, or a Linear after a Flatten, fix the input size: say so now, not at export)."""
    feed = model.spec.example_inputs({**model.spec.sizes("min"), "batch": 2} if "batch" in model.spec.axes else None)
    try:
        with torch.no_grad():
            outputs = named_outputs(model.spec, model.module.eval()(*to_tensors(model.spec, feed)))
        model.spec.check_outputs(outputs, model.spec.axis_sizes(feed))
    except Exception as err:  # a shape error from deep inside the model: the user needs which input and why
        sizes = {i.name: f"{before[i.name]} -> {list(i.shape[2:])}" for i in model.spec.inputs
                 if list(i.shape[2:]) != before[i.name]}
        raise ConfigError(f"resize: model {model.spec.name!r} does not run at the new size {sizes}: "
                          f"{str(err).splitlines()[0][:300]}",
                          "its tower needs the size it was built for (position embeddings, a Flatten into a "
                          "Linear): leave it out of resize.size, or pick a size its layers accept") from None
