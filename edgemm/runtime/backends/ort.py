"""ONNX Runtime backends: the CPU and CUDA execution providers."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from edgemm.config import Strict
from edgemm.errors import BackendUnavailable, EdgemmError
from edgemm.lazy import lazy_import
from edgemm.runtime.session import BACKENDS, Backend, Session, file_bytes

ort = lazy_import("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu for CUDA)")

OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}


class OrtOptions(Strict):
    """ONNX Runtime session options that matter at batch 1 on an edge CPU; a profile's ``ort:`` section sets
    them for the artifacts exported with it, and every report records the ones used."""

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisations applied when the session is created")
    allow_spinning: bool = Field(True, description="intra-op threads spin-wait for work: lower latency, "
                                                   "busy cores (off on a shared or battery-powered device)")
    memory_pattern: bool = Field(True, description="plan buffer reuse from the first run's shapes "
                                                   "(helps fixed shapes; dynamic shapes re-plan)")
    prepacking: bool = Field(True, description="pre-pack constant weights into the kernels' layout at load")


class OrtSession(Session):
    run_failure_hint = ("the graph does not run on inputs shaped as its contract (the edgemm.spec metadata, or its "
                        "declared inputs) says: re-export it with `edgemm export`")

    def __init__(self, model, threads: int | None, providers: list[str], backend: str, options: OrtOptions):
        settings = ort.SessionOptions()
        if threads:
            settings.intra_op_num_threads = threads
            settings.inter_op_num_threads = 1
        settings.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                    OPTIMIZATION_LEVELS[options.graph_optimization_level])
        settings.enable_mem_pattern = options.memory_pattern
        settings.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
        settings.add_session_config_entry("session.disable_prepacking", "0" if options.prepacking else "1")
        self.options_used = options.model_dump()
        try:
            self.session = ort.InferenceSession(str(model.onnx_path), settings, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise EdgemmError(f"ONNX Runtime cannot load {model.source}: {str(err)[:300]}",
                              "re-export the model; check the opset and operators") from None
        self.spec, self.backend = model.spec, backend
        self.device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.artifact_bytes = file_bytes(model.onnx_path, Path(str(model.onnx_path) + ".data"))

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feed)))


class OrtBackend(Backend):
    providers: ClassVar[list[str]]
    config = OrtOptions
    consumes = "onnx"
    requires = ("onnxruntime",)

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason:
            return reason
        try:
            available = ort.get_available_providers()
        except BackendUnavailable as err:  # installed but broken
            return str(err)
        missing = [p for p in self.providers if p not in available]
        return f"ONNX Runtime here lacks {missing}" if missing else None

    def load(self, model, threads=None, options=None) -> Session:
        return OrtSession(model, threads, self.providers, self.name, options or OrtOptions())


@BACKENDS.register
class OrtCpu(OrtBackend):
    name = "ort-cpu"
    description = "ONNX Runtime, CPU execution provider"
    providers = ["CPUExecutionProvider"]
    supports = ("cpu", "fp32", "int8")


@BACKENDS.register
class OrtCuda(OrtBackend):
    name = "ort-cuda"
    description = "ONNX Runtime, CUDA execution provider (onnxruntime-gpu)"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    supports = ("cuda", "fp32", "fp16", "int8")
