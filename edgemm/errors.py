"""Errors a user can act on: each names the problem and the fix.

The CLI prints these without a traceback and exits with ``exit_code``.
"""
from __future__ import annotations


# What user code (a factory, a forward, a data function) may raise: sys.exit() included, which must not
# end an edgemm command silently with the user's exit code.
USER_CODE_ERRORS = (Exception, SystemExit)


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


class ModelRunFailed(EdgemmError):
    """The model itself failed on inputs that match its contract (a crashing forward, an ONNX graph
    that does not run): the model or its contract is wrong, not the input."""


class NonFiniteOutputs(EdgemmError):
    """A model's outputs hold NaN or inf: no figure computed from them means anything."""

    exit_code = 3


class CodeNotTrusted(EdgemmError):
    """A file names code to run (a factory, a data function) that the user has not said they trust."""


class Interrupted(EdgemmError):
    """Ctrl-C: the command stopped; nothing it was writing was left looking complete."""

    exit_code = 130


class EngineMismatch(EdgemmError):
    """A TensorRT engine built for another TensorRT version, GPU, Jetson release or precision."""


class NotDeployable(EdgemmError):
    """A graph the target's runtime will refuse (an operator TensorRT cannot parse, asymmetric Q/DQ...)."""

    exit_code = 3


class EdgemmWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it as 'warning:')."""


OUT_OF_MEMORY_FIX = "use a smaller --batch-size, fewer threads, or close other programs"


def interrupted_while(err: BaseException) -> bool:
    """A Ctrl-C that another error took the place of: raised inside a lazy import, it leaves the module half
    imported, and the next line that touches it (a ``finally``, an ``except``) raises an AttributeError or
    ImportError whose context is the KeyboardInterrupt."""
    seen = 0
    while err is not None and seen < 50:  # bounded: a context chain may loop
        if isinstance(err, KeyboardInterrupt):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def as_user_error(err: BaseException) -> EdgemmError:
    """Any exception as an error a user can act on: ours as they are; Ctrl-C, memory and file-system
    errors with what to do; anything else named as an edgemm bug (the last resort, not the fix)."""
    if isinstance(err, EdgemmError):
        return err
    if isinstance(err, KeyboardInterrupt) or interrupted_while(err):
        return Interrupted("interrupted (Ctrl-C); nothing it was writing was left looking complete",
                           "run the command again")
    if isinstance(err, MemoryError):
        return EdgemmError("ran out of memory", OUT_OF_MEMORY_FIX)
    if isinstance(err, SystemExit):  # edgemm never calls sys.exit inside a command: user code did
        return EdgemmError(f"code edgemm ran (a factory, forward or data function) called sys.exit({err.code!r})",
                           "raise an exception instead of exiting; edgemm reports it with its message")
    if isinstance(err, OSError) and err.filename:
        reason = err.strerror or type(err).__name__
        return EdgemmError(f"cannot use {err.filename}: {reason}",
                           "check that the path exists, is a file or folder as the option needs, and is writable")
    return EdgemmError(f"internal error: {type(err).__name__}: {str(err)[:300]}",
                       "this is a bug in edgemm: rerun with `edgemm --debug ...` (or EDGEMM_DEBUG=1) for the "
                       "traceback and report it")
