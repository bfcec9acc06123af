"""PyTorch backends: eager on the CPU, ``torch.compile`` (inductor), eager on a CUDA GPU."""
from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgemm.config import Strict
from edgemm.lazy import lazy_import
from edgemm.runtime.convert import named_outputs, to_tensors
from edgemm.runtime.session import BACKENDS, Backend, DeviceStats, Session, file_bytes
from edgemm.runtime.threads import torch_threads

torch = lazy_import("torch")


class TorchOptions(Strict):
    device: str = Field("cpu", description="torch device; a session on another device runs its own copy of the model")


class CompileOptions(TorchOptions):
    mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    dynamic: bool = Field(True, description="one graph for every batch/sequence size instead of a recompile per shape")


class TorchSession(Session):
    """A module (the model's own, or a GraphModule such as INC's) run eagerly, optionally compiled."""

    run_failure_hint = ("the model's forward raised this on inputs its contract allows: call it in Python on "
                        "spec.example_inputs() to see the traceback, and fix the forward or the contract")

    def __init__(self, module: Any, spec, *, backend: str = "torch", device: str = "cpu", threads: int | None = None,
                 compile_options: CompileOptions | None = None, artifact_bytes: int | None = None):
        self.spec, self.backend, self.device, self.threads = spec, backend, device, threads
        if device != "cpu":  # never move the caller's module: other sessions and FLOP counting share it
            module = copy.deepcopy(module).to(device)
        if not isinstance(module, torch.fx.GraphModule):  # exported graphs (INC PT2E) refuse .eval()
            module.eval()
        self.module = module
        self.artifact_bytes = artifact_bytes or sum(p.numel() * p.element_size() for p in module.parameters())
        self.forward = (torch.compile(module, mode=compile_options.mode, dynamic=compile_options.dynamic)
                        if compile_options else module)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Threads are set per call and restored: torch's setting is process-wide (a no-op when unchanged).
        with torch_threads(self.threads), torch.inference_mode():
            return named_outputs(self.spec, self.forward(*to_tensors(self.spec, feed, self.device)))


class CudaSession(TorchSession):
    """Eager PyTorch on the GPU. ``run`` copies inputs in and outputs out, so it synchronises; during
    a timed block the forward pass alone is also timed with CUDA events."""

    def __init__(self, module: Any, spec, device: str, threads: int | None, artifact_bytes: int | None):
        super().__init__(module, spec, backend="torch-cuda", device=device, threads=threads)
        self.artifact_bytes = sum(p.numel() * p.element_size() for p in self.module.parameters())  # on the device
        self._events: list[tuple[Any, Any]] | None = None
        self._resident = 0

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = to_tensors(self.spec, feed, self.device)
        with torch_threads(self.threads), torch.inference_mode():
            if self._events is None:
                return named_outputs(self.spec, self.forward(*inputs))
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.forward(*inputs)
            end.record()
            self._events.append((start, end))
            return named_outputs(self.spec, out)

    def start_timing(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)  # this block's peak, not an earlier session's
        self._resident = torch.cuda.memory_allocated(self.device)  # every live session's weights, and more
        self._events = []

    def stop_timing(self) -> DeviceStats:
        """Device times of the timed calls; peak memory = this session's own weights plus what its calls
        allocated above what was resident when the block started (other sessions' models excluded)."""
        torch.cuda.synchronize(self.device)
        events, self._events = self._events or [], None
        working = torch.cuda.max_memory_allocated(self.device) - self._resident
        return {"device_ms": [start.elapsed_time(end) for start, end in events],
                "peak_memory_mb": (self.artifact_bytes + working) / 2**20}


@BACKENDS.register
class TorchEager(Backend):
    name = "torch"
    description = "PyTorch eager (fp32); device option for other torch devices"
    config = TorchOptions
    consumes = "torch"
    requires = ("torch",)
    supports = ("cpu", "fp32")

    def load(self, model, threads=None, options=None) -> Session:
        options = options or self.config()
        return TorchSession(model.module, model.spec, backend=self.name, device=options.device, threads=threads,
                            compile_options=options if isinstance(options, CompileOptions) else None,
                            artifact_bytes=file_bytes(model.weights))


@BACKENDS.register
class TorchCompile(TorchEager):
    name = "torch-compile"
    description = "torch.compile (inductor); the first call compiles (seconds)"
    config = CompileOptions


class CudaOptions(Strict):
    device: str = Field("cuda", description="CUDA device, e.g. cuda:1")


@BACKENDS.register
class TorchCuda(TorchEager):
    name = "torch-cuda"
    description = "PyTorch eager on an NVIDIA GPU: CUDA-event forward times, synchronised latency, peak memory"
    config = CudaOptions
    supports = ("cuda", "fp32", "fp16")
    needs_gpu = True


    def load(self, model, threads=None, options=None) -> Session:
        options = options or self.config()
        return CudaSession(model.module, model.spec, options.device, threads, file_bytes(model.weights))
