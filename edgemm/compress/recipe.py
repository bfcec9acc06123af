"""Compression recipes: ordered stages plus accuracy/speed gates, from YAML, validated with pydantic.

The schema of a stage entry is read from the registries: each stage's config class (and, for
``quantize``, each quantizer's), so a new stage or quantizer module is usable in recipes
without touching this file. ``Recipe`` (the model class) is built on first use.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Discriminator, Field, Tag, create_model, model_validator

from edgemm.compress.gates import Gates
from edgemm.compress.quantizer import QUANTIZERS
from edgemm.compress.stage import STAGES, artifact_chain
from edgemm.config import UNKNOWN_NAME, Strict, load_yaml_model
from edgemm.errors import ConfigError
from edgemm.export.profiles import DEFAULT_PROFILE

PACKAGED_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = "prune-distill-int8"


class RecipeBase(Strict):
    name: str
    description: str = ""
    target: str = Field(DEFAULT_PROFILE, description="export profile: scheme, round_to and validation come from it")
    gates: Gates = Gates()
    stages: list[Any]  # narrowed by recipe_model() to the registered stages' configs

    @model_validator(mode="after")
    def _artifact_kinds_chain(self) -> "RecipeBase":
        """A stage that needs a PyTorch model cannot follow one that produced ONNX (export only goes one way)."""
        kind, producer = "torch", None
        for index, (config, needs, makes) in enumerate(artifact_chain(self.stages)):
            if needs == "torch" and kind == "onnx":
                raise ValueError(f"stage {index} ({config.stage}) needs a PyTorch model, but {producer} before it "
                                 f"produces ONNX: put {producer} last")
            kind, producer = makes, config.stage
        return self


def _stage_of(entry: Any) -> str | None:
    return entry.get("stage") if isinstance(entry, dict) else getattr(entry, "stage", None)


def recipe_model() -> type[RecipeBase]:
    """The Recipe model: a stage entry is any registered stage's config, chosen by its ``stage`` key."""
    return _recipe_model(STAGES.version, QUANTIZERS.version)


@functools.cache
def _recipe_model(*_registry_versions: object) -> type[RecipeBase]:
    stages = [s for s in STAGES if s.in_recipes]
    members = tuple(Annotated[s.config_type(), Tag(s.name)] for s in stages)
    entry = Annotated[Union[members], Discriminator(  # noqa: UP007 (a runtime-built union)
        _stage_of, custom_error_type=UNKNOWN_NAME + "stage",
        custom_error_message=f"unknown stage; registered: {', '.join(s.name for s in stages)} (`edgemm list stages`)")]
    return create_model("Recipe", __base__=RecipeBase, stages=(list[entry], Field(min_length=1)))


def __getattr__(name: str) -> Any:  # `from edgemm.compress.recipe import Recipe` builds the model on first use
    if name == "Recipe":
        return recipe_model()
    raise AttributeError(name)


def available_recipes() -> list[str]:
    return sorted(p.stem for p in PACKAGED_RECIPES.glob("*.yaml"))


def load_recipe(name_or_path: str | Path | None = None) -> RecipeBase:
    ref = str(name_or_path or DEFAULT_RECIPE)
    path = Path(ref) if Path(ref).is_file() else PACKAGED_RECIPES / f"{ref}.yaml"
    if not path.is_file():
        if Path(ref).suffix in (".yaml", ".yml") or "/" in ref or "\\" in ref:  # meant as a file
            raise ConfigError(f"recipe file {ref!r} does not exist",
                              f"check the path (relative to {Path.cwd()}), or name a packaged recipe: "
                              f"{available_recipes()}")
        raise ConfigError(f"unknown recipe {ref!r}", f"give a YAML path or one of {available_recipes()}")
    return load_yaml_model(recipe_model(), path, "`edgemm list --schema recipe` prints every key a recipe takes")
