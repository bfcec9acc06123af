"""Inference backends behind one interface, registered by name.

A backend turns a :class:`LoadedModel` into a :class:`Session` whose ``run``
takes and returns numpy arrays keyed by the spec's names. Heavy libraries are
imported only when a backend is used. A TensorRT engine backend registers the
same way (see the TensorRT issue) without changes elsewhere.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from edgemm.errors import BackendUnavailable, EdgemmError
from edgemm.models.registry import LoadedModel


class Session(ABC):
    """A loaded model ready to run; ``run`` is what the latency loop times."""

    backend: str
    artifact_bytes: int | None = None

    @abstractmethod
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(ABC):
    name: str
    description: str

    def unavailable_reason(self) -> str | None:
        """None when usable here, else why not (missing library, no GPU...)."""
        return None

    @abstractmethod
    def accepts(self, model: LoadedModel) -> bool: ...

    @abstractmethod
    def load(self, model: LoadedModel, threads: int | None = None) -> Session: ...


BACKENDS: dict[str, Backend] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls()
    return cls


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise EdgemmError(f"unknown backend {name!r}", f"choose one of {sorted(BACKENDS)}")
    backend = BACKENDS[name]
    reason = backend.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend {name!r} is not usable here: {reason}")
    return backend


def default_backend(model: LoadedModel) -> str:
    return "ort-cpu" if model.kind == "onnx" else "torch"


def _file_bytes(*paths: Path | None) -> int | None:
    sizes = [p.stat().st_size for p in paths if p is not None and p.is_file()]
    return sum(sizes) if sizes else None


# -- torch eager -------------------------------------------------------------------------------
class TorchSession(Session):
    backend = "torch"

    def __init__(self, model: LoadedModel, threads: int | None, compiled: bool = False):
        import torch

        from edgemm.train import to_tensors

        self._torch, self._to_tensors = torch, to_tensors
        self.model, self.threads = model, threads
        if threads:
            torch.set_num_threads(threads)
        self.artifact_bytes = _file_bytes(model.weights) or sum(
            p.numel() * p.element_size() for p in model.module.parameters())
        # dynamic=True: one graph for every batch/sequence size instead of a recompile per shape.
        self.forward = torch.compile(model.module, dynamic=True) if compiled else model.module
        if compiled:
            self.backend = "torch-compile"

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._torch.inference_mode():
            out = self.forward(*self._to_tensors(self.model.spec, feed))
        outs = out if isinstance(out, (tuple, list)) else [out]
        if isinstance(out, dict):
            outs = list(out.values())
        return {name: t.float().numpy() for name, t in zip(self.model.spec.output_names, outs)}


@register_backend
class TorchEager(Backend):
    name = "torch"
    description = "PyTorch eager, CPU (fp32)"

    def accepts(self, model: LoadedModel) -> bool:
        return model.module is not None

    def load(self, model: LoadedModel, threads: int | None = None) -> Session:
        return TorchSession(model, threads)


@register_backend
class TorchCompile(TorchEager):
    name = "torch-compile"
    description = "torch.compile (inductor), CPU; the first call compiles (seconds)"

    def load(self, model: LoadedModel, threads: int | None = None) -> Session:
        return TorchSession(model, threads, compiled=True)


class TorchCudaSession(TorchSession):
    """Eager PyTorch on the GPU. ``run`` copies inputs in and outputs out and so synchronises; the
    forward pass alone is also timed with CUDA events (``device_ms``)."""

    backend = "torch-cuda"

    def __init__(self, model: LoadedModel, threads: int | None):
        super().__init__(model, threads)
        self.forward = model.module.to("cuda")
        self.device_ms: list[float] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        inputs = [t.to("cuda", non_blocking=True) for t in self._to_tensors(self.model.spec, feed)]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.inference_mode():
            start.record()
            out = self.forward(*inputs)
            end.record()
        outs = out if isinstance(out, (tuple, list)) else [out]
        result = {name: t.float().cpu().numpy() for name, t in zip(self.model.spec.output_names, outs)}
        torch.cuda.synchronize()
        self.device_ms.append(start.elapsed_time(end))
        return result

    def memory(self) -> dict[str, float]:
        return {"gpu_peak_allocated_mb": self._torch.cuda.max_memory_allocated() / 2**20}


@register_backend
class TorchCuda(TorchEager):
    name = "torch-cuda"
    description = "PyTorch eager on an NVIDIA GPU (CUDA events + synchronisation)"

    def unavailable_reason(self) -> str | None:
        import torch

        return None if torch.cuda.is_available() else "no CUDA GPU visible to torch"

    def load(self, model: LoadedModel, threads: int | None = None) -> Session:
        return TorchCudaSession(model, threads)


# -- ONNX Runtime ------------------------------------------------------------------------------
class OrtSession(Session):
    def __init__(self, model: LoadedModel, threads: int | None, providers: list[str], backend: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(model.onnx_path), options, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise EdgemmError(f"ONNX Runtime cannot load {model.onnx_path}: {str(err)[:300]}",
                              "re-export the model; check the opset and operators") from None
        self.backend = backend
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.artifact_bytes = _file_bytes(model.onnx_path, Path(str(model.onnx_path) + ".data"))

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feed)))


class _OrtBackend(Backend):
    providers: list[str]

    def unavailable_reason(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        return f"ONNX Runtime here lacks {missing}" if missing else None

    def accepts(self, model: LoadedModel) -> bool:
        return model.onnx_path is not None

    def load(self, model: LoadedModel, threads: int | None = None) -> Session:
        return OrtSession(model, threads, self.providers, self.name)


@register_backend
class OrtCpu(_OrtBackend):
    name = "ort-cpu"
    description = "ONNX Runtime, CPU execution provider"
    providers = ["CPUExecutionProvider"]


@register_backend
class OrtCuda(_OrtBackend):
    name = "ort-cuda"
    description = "ONNX Runtime, CUDA execution provider (onnxruntime-gpu)"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]


