"""Errors a user can act on: each names the problem and the fix.

The CLI prints these without a traceback and exits with ``exit_code``.
"""
from __future__ import annotations


class EdgemmError(Exception):
    """Base class: ``str(err)`` is the problem, ``err.hint`` the fix."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  fix: {self.hint}" if self.hint else text


class InputError(EdgemmError):
    """Inputs do not match the model contract (missing, wrong dtype/shape, NaN)."""


class ModelLoadError(EdgemmError):
    """A model reference could not be resolved or its weights could not be loaded."""


class ConfigError(EdgemmError):
    """A profile, recipe or option is invalid."""


class ValidationFailed(EdgemmError):
    """An exported artifact disagrees with the reference model beyond tolerance."""

    exit_code = 3


class BackendUnavailable(EdgemmError):
    """An optional backend (TensorRT, CUDA...) is not installed on this machine."""


class GateFailed(EdgemmError):
    """A compression stage or recipe missed its accuracy/speed budget."""

    exit_code = 4


class LibraryFailed(EdgemmError):
    """A library edgemm drives (a quantizer, an exporter) failed on this model: its message, and what to try."""


class EdgemmWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it as 'warning:')."""
