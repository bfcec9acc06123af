"""Compression recipes: ordered stages plus accuracy/speed gates, from YAML, validated with pydantic."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgemm.errors import ConfigError
from edgemm.export.profiles import format_validation_error

PACKAGED_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = "prune-distill-int8"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Gates(_Strict):
    """Budgets the final model must meet, measured against the input model."""

    split: str = Field("val", description="split the gates are measured on (test stays for reporting)")
    max_accuracy_drop: float | None = Field(1.0, ge=0, description="absolute, in accuracy points (0-100)")
    max_relative_drop: float | None = Field(None, ge=0, le=1, description="fraction of the reference accuracy")
    min_speedup: float | None = Field(None, gt=0, description="batch-1 latency of ORT fp32 / compressed (ORT)")

    def allowed_drop(self, reference: float) -> float:
        """Allowed accuracy drop as a fraction (0-1); the tighter of the two budgets."""
        limits = [x for x in (None if self.max_accuracy_drop is None else self.max_accuracy_drop / 100,
                              None if self.max_relative_drop is None else self.max_relative_drop * reference)
                  if x is not None]
        return min(limits) if limits else 1.0


class PruneStage(_Strict):
    stage: Literal["prune"]
    ratio: float = Field(0.5, ge=0, lt=1, description="default channel ratio removed")
    towers: dict[str, float] = Field(default_factory=dict, description="per-tower ratio: input name or module path")
    importance: Literal["l2", "l1", "random"] = "l2"
    global_pruning: bool = False
    prune_heads: bool = True
    head_ratio: float = Field(0.5, ge=0, lt=1)
    ignore: list[str] = Field(default_factory=list, description="module paths (prefixes) left untouched")
    round_to: int | None = Field(None, ge=1, description="default: the target profile's pruning.round_to")
    max_accuracy_drop: float | None = Field(None, ge=0, description="optional per-stage gate, points")


class DistillStage(_Strict):
    stage: Literal["distill"]
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the KL term; 1 - alpha for the task loss")
    feature_weight: float = Field(0.0, ge=0, description="MSE between teacher and student tower embeddings")
    patience: int = Field(3, ge=1, description="early stopping: epochs without validation gain")
    max_steps: int | None = Field(None, ge=1)
    max_accuracy_drop: float | None = Field(None, ge=0)


class FallbackSettings(_Strict):
    max_tries: int = Field(4, ge=0, description="quantize-evaluate rounds after the first, each keeping more in float")
    granularity: list[Literal["tower", "node"]] = Field(default_factory=lambda: ["tower", "node"])
    nodes_per_try: int = Field(4, ge=1)


class QuantizeStage(_Strict):
    stage: Literal["quantize"]
    backend: Literal["ort", "inc", "modelopt", "fp16"] = "ort"
    mode: Literal["static", "dynamic"] = "static"
    calibration_samples: int = Field(512, ge=1)
    calibration_split: str = "train"
    calibration_method: Literal["minmax", "percentile", "entropy"] | None = None
    keep_float: list[str] = Field(default_factory=list, description="towers (input names) kept in float")
    fallback: FallbackSettings = FallbackSettings()
    max_accuracy_drop: float | None = Field(None, ge=0)


StageConfig = Annotated[Union[PruneStage, DistillStage, QuantizeStage], Field(discriminator="stage")]


class Recipe(_Strict):
    name: str
    description: str = ""
    target: str = Field("x86-cpu", description="export profile: scheme, round_to and validation come from it")
    gates: Gates = Gates()
    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> "Recipe":
        kinds = [s.stage for s in self.stages]
        if "quantize" in kinds and kinds.index("quantize") != len(kinds) - 1:
            raise ValueError("quantize must be the last stage (it works on the exported ONNX graph)")
        return self


def available_recipes() -> list[str]:
    return sorted(p.stem for p in PACKAGED_RECIPES.glob("*.yaml"))


def load_recipe(name_or_path: str | Path | None = None) -> Recipe:
    ref = str(name_or_path or DEFAULT_RECIPE)
    path = Path(ref) if Path(ref).is_file() else PACKAGED_RECIPES / f"{ref}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {ref!r}", f"give a YAML path or one of {available_recipes()}")
    try:
        return Recipe.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err})", "fix the file's syntax") from None
    except ValidationError as err:
        raise ConfigError(f"recipe {path}: {format_validation_error(err)}",
                          "see the recipe keys in README.md (unknown keys are rejected)") from None
