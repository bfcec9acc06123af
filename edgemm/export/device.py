"""What a profile says about the device it deploys to: public figures for roofline efficiency and the
power mode to benchmark in. Every figure names its source; figures not confirmed from NVIDIA's own
pages are marked as such in ``source`` (see ../shared/TENSORRT.md §6–7)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgemm.config import Strict


class PowerMode(Strict):
    """A Jetson power mode: ``sudo nvpmodel -m ID`` selects it; ``jetson_clocks`` pins clocks to its maxima."""

    nvpmodel_id: int | None = Field(None, ge=0, description="the ID in /etc/nvpmodel.conf of this module's BSP; "
                                    "none: IDs differ between BSPs, the device script matches the name")
    name: str = Field(description="the mode's name as nvpmodel -q prints it (MAXN, 15W, ...)")
    jetson_clocks: bool = Field(True, description="pin CPU/GPU/EMC clocks: steadier latency, the usual benchmark "
                                                  "setting")


class DeviceFacts(Strict):
    name: str
    kind: Literal["jetson", "gpu", "cpu"]
    arch: str | None = Field(None, description="Ampere, Ada, Hopper, Volta, x86-64, arm64...")
    compute_capability: str | None = Field(None, pattern=r"^\d+\.\d+$", description="CUDA SM version, e.g. 8.7")
    memory_gb: float | None = Field(None, gt=0)
    memory_bandwidth_gbs: float | None = Field(None, gt=0)
    peak_fp16_tflops: float | None = Field(None, gt=0, description="dense tensor-core FP16 (FP32 accumulate)")
    peak_int8_tops: float | None = Field(None, gt=0, description="dense INT8 (sparse figures are 2x)")
    dla_cores: int = Field(0, ge=0)
    jetpack: str | None = Field(None, description="JetPack release the profile was written for (Jetson only)")
    power_mode: PowerMode | None = None
    source: str = Field("", description="where the figures come from (U = unverified)")

    @model_validator(mode="after")
    def _consistent(self) -> "DeviceFacts":
        if self.kind != "jetson" and (self.power_mode or self.jetpack):
            raise ValueError("power_mode and jetpack apply to Jetson modules only")
        if self.kind == "cpu" and self.compute_capability:
            raise ValueError("a CPU has no CUDA compute capability")
        return self
