"""Registries whose entries own their configuration.

Every pluggable part of edgemm — a compression stage, a quantizer, an export target, a
bench backend, a zoo model, a data source — is a :class:`Component`: it declares its name,
its config class, the artifact kinds it consumes and produces, the optional libraries it
needs and what it supports. A :class:`Registry` finds its components by importing every
module of one package (so adding a component is adding one file) and the installed
packages' entry points (so a third party can add one without touching edgemm). Recipe
schemas, CLI choices and ``edgemm list`` are read from the registries, never from a list
kept elsewhere.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
from typing import Any, ClassVar, Generic, Iterator, TypeVar

from pydantic import BaseModel

from edgemm.errors import BackendUnavailable, ConfigError

ArtifactKind = str  # "torch" (a PyTorch model directory) or "onnx" (a file); TensorRT adds "engine"


class Component:
    """What a registry entry declares about itself (ModelOpt's ModeDescriptor, Olive's passes)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config: ClassVar[type[BaseModel] | None] = None  # its own settings, validated where it is configured
    consumes: ClassVar[ArtifactKind | None] = None
    produces: ClassVar[ArtifactKind | None] = None
    requires: ClassVar[tuple[str, ...]] = ()  # import names of the optional libraries it needs
    extra: ClassVar[str | None] = None  # the pip extra that installs them
    supports: ClassVar[tuple[str, ...]] = ()  # devices and precisions: "cpu", "cuda", "fp32", "int8"...
    needs_gpu: ClassVar[bool] = False  # unusable without a CUDA GPU visible to torch

    def unavailable_reason(self) -> str | None:
        """None when usable on this machine, else why not (a missing library, no GPU...)."""
        missing = [m for m in self.requires if not _importable(m)]
        if not missing:
            return "no CUDA GPU visible to torch" if self.needs_gpu and not _cuda_visible() else None
        install = f"pip install 'edgemm[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
        return f"needs {', '.join(missing)} ({install})"

    def unavailable_fix(self, usable: list[str]) -> str:
        """What to do when this entry is asked for but unusable; ``usable`` are its usable siblings."""
        return f"install what it needs, or use one of {', '.join(usable) or 'none'}"

    def summary(self) -> dict[str, Any]:
        """What ``edgemm list`` shows."""
        return {"name": self.name, "description": self.description, "consumes": self.consumes,
                "produces": self.produces, "supports": list(self.supports),
                "config": self.config.__name__ if self.config else None, "unavailable": self.unavailable_reason()}


def _cuda_visible() -> bool:
    import torch  # noqa: PLC0415 - only for components that need a GPU (torch is a dependency)

    return torch.cuda.is_available()


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _origin(entry: Any) -> tuple[str, str]:
    return type(entry).__module__, type(entry).__qualname__


C = TypeVar("C", bound=Component)


class Registry(Generic[C]):
    """Components of one kind, keyed by name; built-ins are the modules of ``package``."""

    def __init__(self, kind: str, package: str, entry_points: str | None = None):
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_points or f"edgemm.{kind.replace(' ', '_')}s"
        self._entries: dict[str, C] = {}
        self._broken: dict[str, str] = {}  # entry-point name -> why its plugin did not load
        self._loaded = False
        self._changes = 0

    # -- registration -------------------------------------------------------------------
    def register(self, entry: Any) -> Any:
        """Register a component class (instantiated once) or instance; usable as a decorator."""
        instance = entry() if isinstance(entry, type) else entry
        if not instance.name:
            raise TypeError(f"{entry!r} declares no name")
        known = self._entries.get(instance.name)
        if known is not None and _origin(known) != _origin(instance):  # a reloaded module may register again
            raise ConfigError(f"two {self.kind}s are called {instance.name!r} "
                              f"({type(known).__module__} and {type(instance).__module__})",
                              "rename one of them")
        self._entries[instance.name] = instance
        self._changes += 1
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that add one clean up after themselves)."""
        if self._entries.pop(name, None) is not None:
            self._changes += 1

    @property
    def version(self) -> tuple[str, int]:
        """Changes with every (un)registration: models derived from the registry are rebuilt when it moves."""
        self._discover()
        return self.kind, self._changes

    def _discover(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: a module being imported may read this registry
        try:
            package = importlib.import_module(self.package)
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        except BaseException:
            self._loaded = False  # a built-in that fails to import is a bug in edgemm: let it show
            raise
        for point in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                point.load()  # the plugin module registers itself on import
            except Exception as err:  # a broken plugin must not take edgemm down: it is listed, and refused
                self._broken[point.name] = (f"plugin {point.value!r} failed to load ({type(err).__name__}: "
                                            f"{str(err)[:200]}); fix or uninstall the package that declares it "
                                            f"(entry-point group {self.entry_point_group})")

    def broken(self) -> dict[str, str]:
        """Plugins that failed to load, by entry-point name, with the reason."""
        self._discover()
        return dict(self._broken)

    # -- lookups --------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._discover()
        return list(self._entries)

    def __iter__(self) -> Iterator[C]:
        self._discover()
        return iter(list(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def find(self, name: str) -> C | None:
        self._discover()
        return self._entries.get(name)

    def get(self, name: str, usable: bool = True) -> C:
        """The entry called ``name``; unknown or (with ``usable``) unusable ones raise with the fix."""
        entry = self.find(name)
        if entry is None and name in self._broken:
            raise BackendUnavailable(f"{self.kind} {name!r} is not usable here: {self._broken[name]}")
        if entry is None:
            raise ConfigError(f"unknown {self.kind} {name!r}", f"choose one of {', '.join(self.names())}")
        reason = entry.unavailable_reason() if usable else None
        if reason:
            usable_ones = [e.name for e in self if not e.unavailable_reason()]
            raise BackendUnavailable(f"{self.kind} {name!r} is not usable here: {reason}",
                                     entry.unavailable_fix(usable_ones))
        return entry
