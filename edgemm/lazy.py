"""Heavy and optional libraries, declared at the top of a module and imported on first use.

``torch = lazy_import("torch")`` costs nothing until ``torch.something`` is read, so
``edgemm --help`` and the registries stay fast, and a module that only *may* need an
optional library (TensorRT, INC, ModelOpt) can still be imported without it. A missing
library surfaces as :class:`~edgemm.errors.BackendUnavailable` naming the install command,
not as an ImportError deep in a traceback (Polygraphy's ``mod.lazy_import``, re-thought).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

from edgemm.errors import BackendUnavailable


class LazyModule:
    """Stands in for a module; the real import happens on the first attribute read.

    Its own names start with an underscore (``available`` aside) so that they never hide the
    module's: ``onnx.load`` must reach the real ``onnx.load``.
    """

    def __init__(self, name: str, install: str | None = None):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_install", install or f"pip install {name.split('.')[0]}")
        object.__setattr__(self, "_module", None)

    @property
    def available(self) -> bool:
        """True when the library can be imported here (checked without importing it)."""
        try:
            return importlib.util.find_spec(self._name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            return False

    def _import(self) -> ModuleType:
        if self._module is None:
            try:
                module = importlib.import_module(self._name)
            except ModuleNotFoundError as err:
                raise BackendUnavailable(f"{self._name} is not installed here ({err})", self._install) from None
            except ImportError as err:  # installed but broken (a missing shared library, a version clash)
                raise BackendUnavailable(f"{self._name} is installed but fails to import ({str(err)[:300]})",
                                         f"reinstall it: {self._install}") from None
            object.__setattr__(self, "_module", module)
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._import(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._import(), attr, value)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_import(name: str, install: str | None = None) -> Any:
    """A module imported on first use; ``install`` is the fix shown when it is missing."""
    return LazyModule(name, install)


def import_user_module(name: str) -> Any:
    """Import a module a user named (``mypkg.model:build``) the way ``python -m`` would: with the
    current directory on the path, so a factory beside the user's data imports without PYTHONPATH."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return importlib.import_module(name)
