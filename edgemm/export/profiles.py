"""Export profiles: per-target settings in ``export_profiles/*.yaml``, validated with pydantic."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgemm.errors import ConfigError

PACKAGED = Path(__file__).resolve().parent.parent / "export_profiles"  # wheel copy (see pyproject)
SOURCE_TREE = Path(__file__).resolve().parents[2] / "export_profiles"
DEFAULT_PROFILE = "x86-cpu"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidationSettings(_Strict):
    """How an exported artifact is checked against the PyTorch reference."""

    split: str = Field("test", description="dataset split whose real samples are compared")
    samples: int = Field(256, ge=1)
    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)
    min_cosine: float = Field(0.9999, le=1)
    min_top1_agreement: float = Field(0.999, ge=0, le=1)


class OnnxSettings(_Strict):
    opset: int = Field(18, ge=13)
    simplify: bool = True


class QuantizationSettings(_Strict):
    """The int8 scheme the target runs fastest and accurately (see shared notes for measurements)."""

    activations: Literal["uint8", "int8"] = Field("uint8", description="uint8 asymmetric for x86 VNNI; int8 for TensorRT")
    symmetric_activations: bool = False
    per_channel: bool = True
    op_types: list[str] = Field(default_factory=lambda: ["Conv", "MatMul", "Gemm"],
                                description="quantising Add/Softmax (attention masks) collapses accuracy")
    calibration_method: Literal["minmax", "percentile", "entropy"] = "minmax"


class PruningSettings(_Strict):
    round_to: int | None = Field(8, ge=1, description="pruned channel counts are multiples of this")


class ExportProfile(_Strict):
    name: str
    description: str = ""
    target: Literal["onnx", "tensorrt", "torch-tensorrt"]
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    onnx: OnnxSettings = OnnxSettings()
    validation: ValidationSettings = ValidationSettings()
    quantization: QuantizationSettings = QuantizationSettings()
    pruning: PruningSettings = PruningSettings()


def profile_dirs() -> list[Path]:
    return [d for d in (Path.cwd() / "export_profiles", SOURCE_TREE, PACKAGED) if d.is_dir()]


def available_profiles() -> list[str]:
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.yaml")})


def load_profile(name_or_path: str | Path | None = None) -> ExportProfile:
    """A profile by name (searched in ./export_profiles, then the packaged copy) or by YAML path."""
    ref = str(name_or_path or DEFAULT_PROFILE)
    path = Path(ref)
    if not path.is_file():
        found = [d / f"{ref}.yaml" for d in profile_dirs() if (d / f"{ref}.yaml").is_file()]
        if not found:
            raise ConfigError(f"unknown export profile {ref!r}", f"choose one of {available_profiles()} or give a YAML path")
        path = found[0]
    try:
        data = yaml.safe_load(path.read_text())
        return ExportProfile.model_validate(data)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err})", "fix the file's syntax") from None
    except ValidationError as err:
        raise ConfigError(f"{path}: {format_validation_error(err)}", "see export_profiles/README.md") from None


def format_validation_error(err: ValidationError) -> str:
    """Name each offending key: 'validation.atol: Input should be a valid number'."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors())
