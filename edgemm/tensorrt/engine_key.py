"""What an engine is only valid for: TensorRT plans load only with the TensorRT version and GPU model
they were built with, and Jetson engines only on the module and JetPack they were built on [TRT §2]."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgemm.errors import EngineMismatch
from edgemm.tensorrt.device_script import gpu_facts, jetson_release, release  # shared with the standalone bundle script


@dataclass(frozen=True)
class EngineKey:
    tensorrt: str  # full version: plans are tied to it unless built version-compatible
    compute_capability: str  # "8.7"
    jetson: str | None  # L4T release ("R36.4.0") on a Jetson, None elsewhere; JetPack 6.1 = L4T R36.4
    precision: str  # fp32 | fp16 | int8: what the engine was built to run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineKey":
        key = cls(**{k: data.get(k) for k in ("tensorrt", "compute_capability", "jetson", "precision")})
        return cls(release(key.tensorrt), key.compute_capability, key.jetson, key.precision)

    def differences(self, other: "EngineKey") -> list[str]:
        labels = {"tensorrt": "TensorRT", "compute_capability": "compute capability", "jetson": "Jetson L4T release",
                  "precision": "precision"}
        return [f"{labels[k]} {getattr(self, k) or 'none'} (engine) vs {getattr(other, k) or 'none'} (here)"
                for k in labels if getattr(self, k) != getattr(other, k)]


def check_engine_key(engine: Path, built: EngineKey, here: EngineKey, rebuild: str) -> None:
    """Refuse an engine whose key differs from this machine's before TensorRT tries (and fails obscurely)."""
    diff = built.differences(here)
    if diff:
        raise EngineMismatch(f"{engine} was built for another device or TensorRT: {'; '.join(diff)}",
                             f"rebuild it here: {rebuild}")


def current_key(precision: str, compute_capability: str | None = None) -> EngineKey:
    """This machine's key (needs TensorRT). The compute capability comes from nvidia-smi or torch, else the
    ``compute_capability`` given (the profile's), so a Jetson with a CPU-only torch still gets one."""
    import tensorrt as trt  # noqa: PLC0415 - optional extra, only on a device

    gpu = gpu_facts({"device": {"compute_capability": compute_capability}})
    return EngineKey(release(trt.__version__), gpu["compute_capability"], jetson_release(), precision)
