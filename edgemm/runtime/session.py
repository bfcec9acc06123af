"""Sessions and the backends that open them.

A :class:`Backend` is a registered component: it names the artifact kind it runs
(``consumes``), its options class, what it supports and what it needs. ``load`` turns a
:class:`~edgemm.models.registry.LoadedModel` into a :class:`Session`, whose ``run`` takes
and returns numpy arrays keyed by the contract's names — the call the latency loop times.
"""
from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypedDict

import numpy as np
from pydantic import BaseModel

from edgemm.config import Strict, validate_as
from edgemm.errors import OUT_OF_MEMORY_FIX, USER_CODE_ERRORS, ConfigError, EdgemmError, ModelRunFailed
from edgemm.registry import Component, Registry

if TYPE_CHECKING:
    from edgemm.models.registry import LoadedModel
    from edgemm.spec import ModelSpec


class DeviceStats(TypedDict, total=False):
    """What a device-side session measured over one block of timed calls."""

    device_ms: list[float]  # per call, device time only (CUDA events)
    peak_memory_mb: float  # device memory high-water mark during the block


class Session(ABC):
    """A loaded model ready to run on one device; it owns its copy of the model there."""

    backend: str
    spec: "ModelSpec"
    device: str = "cpu"
    artifact_bytes: int | None = None
    options_used: dict[str, Any] = {}  # the backend options this session runs with (recorded in reports)

    # What to do when the model itself fails on inputs that match its contract.
    run_failure_hint: ClassVar[str] = "check the model on these inputs in Python; fix the model or its contract"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every backend's ``run`` reports a failing model as ModelRunFailed (one place, plug-ins included)."""
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _reports_failures(cls.__dict__["run"])  # type: ignore[method-assign]

    @abstractmethod
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def start_timing(self) -> None:
        """Called after warm-up, right before a block of timed calls: device timers and
        peak-memory counters start here, so warm-up and accuracy passes never count."""

    def stop_timing(self) -> DeviceStats:
        """Called right after the timed block; CPU sessions have nothing to add."""
        return {}


def _reports_failures(run: Callable[[Session, dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Callable:
    @functools.wraps(run)
    def guarded(self: Session, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return run(self, feed)
        except USER_CODE_ERRORS as err:  # noqa: BLE001 - a model's or runtime's own exceptions (sys.exit too)
            if isinstance(err, EdgemmError):
                raise
            if isinstance(err, MemoryError) or "allocat" in str(err).lower():  # the batch, not the model
                raise EdgemmError(f"{self.backend} ran out of memory running model {self.spec.name!r} "
                                  f"({str(err).strip()[:200]})", OUT_OF_MEMORY_FIX) from None
            shapes = ", ".join(f"{k} {list(getattr(v, 'shape', []))}" for k, v in feed.items())
            raise ModelRunFailed(f"{self.backend} failed to run model {self.spec.name!r} on inputs that match its "
                                 f"contract ({shapes}): {type(err).__name__}: {str(err).strip()[:400]}",
                                 self.run_failure_hint) from None
    return guarded


class NoOptions(Strict):
    """A backend without options of its own."""


class Backend(Component):
    """Opens sessions for one kind of artifact (``consumes``: "torch" or "onnx")."""

    config: ClassVar[type[BaseModel]] = NoOptions

    def accepts(self, model: "LoadedModel") -> bool:
        return model.artifact_kind == self.consumes

    @abstractmethod
    def load(self, model: "LoadedModel", threads: int | None = None, options: Any = None) -> Session: ...

    def options(self, given: dict[str, Any] | BaseModel | None) -> BaseModel:
        """This backend's options, validated by its own config class."""
        if isinstance(given, self.config):
            return given
        return validate_as(self.config, given or {}, f"backend {self.name!r} options",
                           f"see `edgemm list backends` for the options of {self.name!r}")


BACKENDS: Registry[Backend] = Registry("backend", "edgemm.runtime.backends", entry_points="edgemm.backends")


DEFAULT_BACKENDS = {"onnx": "ort-cpu", "engine": "tensorrt", "torch": "torch"}


def default_backend(model: "LoadedModel") -> str:
    return DEFAULT_BACKENDS[model.artifact_kind]


def load_session(model: "LoadedModel", backend: str | None = None, threads: int | None = None,
                 options: dict[str, Any] | BaseModel | None = None) -> Session:
    """Open ``model`` on ``backend`` (default: torch for PyTorch models, ONNX Runtime CPU for ONNX)."""
    most = max(64, 8 * (os.cpu_count() or 1))  # beyond this, runtimes hang or crash creating thread pools
    if threads is not None and not 1 <= threads <= most:
        raise ConfigError(f"{threads} threads: this machine has {os.cpu_count()} cores",
                          f"use 1 to {most} threads (--threads)")
    entry = BACKENDS.get(backend or default_backend(model), usable=False)
    if not entry.accepts(model):  # before usability: "no GPU" would hide that it could never run this file
        runs = [b.name for b in BACKENDS if b.accepts(model)]
        raise ConfigError(f"backend {entry.name!r} cannot run {model.source} ({model.artifact_kind} model)",
                          f"backends for it: {', '.join(runs)}; `edgemm export` turns a PyTorch model into ONNX")
    entry = BACKENDS.get(entry.name)
    return entry.load(model, threads, entry.options(options))


def file_bytes(*paths: Path | None) -> int | None:
    sizes = [p.stat().st_size for p in paths if p is not None and p.is_file()]
    return sum(sizes) if sizes else None
