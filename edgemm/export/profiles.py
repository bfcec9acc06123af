"""Export profiles: per-deployment settings in ``export_profiles/*.yaml``, validated with pydantic.

The sections every profile has (validation, quantization, pruning) are defined here; each
export target adds its own section, named after it and validated by its own config class
(``onnx:`` by the ``onnx`` target's ``OnnxSettings``). ``target`` must name a registered target.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from edgemm.config import Strict, load_yaml_model
from edgemm.environment import x86_without_vnni
from edgemm.export.device import DeviceFacts
from edgemm.errors import ConfigError
from edgemm.export.registry import EXPORT_TARGETS
from edgemm.export.validate import ValidationSettings
from edgemm.runtime.backends.ort import OrtOptions

PACKAGED = Path(__file__).resolve().parent.parent / "export_profiles"  # wheel copy (see pyproject)
SOURCE_TREE = Path(__file__).resolve().parents[2] / "export_profiles"
DEFAULT_PROFILE = "x86-cpu"  # the one place this default is named
TARGET_DEFAULTS = {"onnx": DEFAULT_PROFILE, "tensorrt": "tensorrt-gpu", "torch-tensorrt": "torch-tensorrt-gpu"}


class QuantizationSettings(Strict):
    """The int8 scheme the target runs fastest and accurately (see shared notes for measurements)."""

    activations: Literal["uint8", "int8"] = Field("uint8", description="uint8 asymmetric for x86 VNNI; int8 for TensorRT")
    symmetric_activations: bool = False
    per_channel: bool = True
    op_types: list[str] = Field(default_factory=lambda: ["Conv", "MatMul", "Gemm"],
                                description="quantising Add/Softmax (attention masks) collapses accuracy")
    calibration_method: Literal["minmax", "percentile", "entropy"] = "minmax"
    reduce_range: bool | Literal["auto"] = Field("auto", description=(
        "7-bit weights. onnxruntime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) can "
        "saturate; measured on an AVX2 EPYC: EfficientNet-Lite0 int8 79.1 % -> 84.5 % with it (float 89.1 %). "
        "auto: on when the CPU that quantizes is x86 without VNNI"))

    def reduces_range(self) -> bool:
        return x86_without_vnni() if self.reduce_range == "auto" else self.reduce_range


class PruningSettings(Strict):
    round_to: int | None = Field(8, ge=1, description="pruned channel counts are multiples of this")


class ExportProfile(Strict):
    """The sections every profile has; :func:`profile_model` adds one section per export target."""

    name: str
    description: str = ""
    target: str = Field(description="a registered export target (`edgemm list targets`)")
    precision: Literal["fp32", "fp16", "int8", "best"] = Field("fp32", description=(
        "what the target runs; TensorRT: int8 = int8 kept only where it beats fp16 (else fp16 ships), "
        "best = fp16 and int8 both built, the faster kept"))
    device: DeviceFacts | None = Field(None, description="the device: public figures for roofline efficiency, "
                                                         "Jetson power mode to benchmark in")
    ort: OrtOptions = Field(OrtOptions(), description="ONNX Runtime session options for artifacts exported with "
                                                      "this profile (bench applies them to the ort backends)")
    validation: ValidationSettings = ValidationSettings()
    quantization: QuantizationSettings = QuantizationSettings()
    pruning: PruningSettings = PruningSettings()

    @field_validator("target")
    @classmethod
    def _registered(cls, target: str) -> str:
        if target not in EXPORT_TARGETS:
            raise ValueError(f"unknown export target {target!r}; registered: {', '.join(EXPORT_TARGETS.names())}")
        return target

    @model_validator(mode="after")
    def _fits_device(self) -> "ExportProfile":
        trt = getattr(self, "tensorrt", None)
        dla = getattr(getattr(trt, "dla", None), "core", None)
        if dla is not None and self.device is not None and dla >= self.device.dla_cores:
            raise ValueError(f"tensorrt.dla.core {dla}: {self.device.name} has {self.device.dla_cores} DLA core(s)")
        q = self.quantization
        if self.target == "tensorrt" and not (q.activations == "int8" and q.symmetric_activations):
            raise ValueError("TensorRT takes symmetric int8 only: set quantization.activations: int8 and "
                             "quantization.symmetric_activations: true")
        if self.precision == "best" and self.target != "tensorrt":
            raise ValueError("precision best (build fp16 and int8, keep the faster) is for target tensorrt")
        return self

    def section(self, target: str) -> BaseModel:
        """The settings of one export target (its defaults when the profile has no such section)."""
        return getattr(self, _field_name(target))


def _field_name(target: str) -> str:
    return target.replace("-", "_")


def profile_model() -> type[ExportProfile]:
    """ExportProfile with a section per registered target that has a config class."""
    return _profile_model(EXPORT_TARGETS.version)


@functools.cache
def _profile_model(_registry_version: object) -> type[ExportProfile]:
    sections: dict[str, Any] = {
        _field_name(t.name): (t.config, Field(default_factory=t.config, alias=t.name, description=t.description))
        for t in EXPORT_TARGETS if t.config is not None}
    return create_model("ExportProfile", __base__=ExportProfile, **sections)


def profile_dirs() -> list[Path]:
    return [d for d in (Path.cwd() / "export_profiles", SOURCE_TREE, PACKAGED) if d.is_dir()]


def available_profiles() -> list[str]:
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.yaml")})


def default_profile(target: str) -> str:
    """The generic profile of a target (a plug-in target: its only profile)."""
    if target in TARGET_DEFAULTS:
        return TARGET_DEFAULTS[target]
    mine = [n for n in available_profiles() if _target_of(n) == target]
    if len(mine) != 1:
        raise ConfigError(f"no single default profile for target {target!r} (found {mine})", "pass --profile NAME")
    return mine[0]


def _target_of(name: str) -> str | None:
    try:
        return load_profile(name).target
    except ConfigError:
        return None


def load_profile(name_or_path: str | Path | None = None) -> ExportProfile:
    """A profile by name (searched in ./export_profiles, then the packaged copy) or by YAML path."""
    ref = str(name_or_path or DEFAULT_PROFILE)
    path = Path(ref)
    if not path.is_file():
        found = [d / f"{ref}.yaml" for d in profile_dirs() if (d / f"{ref}.yaml").is_file()]
        if not found:
            raise ConfigError(f"unknown export profile {ref!r}", f"choose one of {available_profiles()} or give a YAML path")
        path = found[0]
    return load_yaml_model(profile_model(), path, "`edgemm list --schema profile` prints every key a profile takes")
