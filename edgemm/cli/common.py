"""Shared CLI plumbing: error handling, quiet heavy libraries, progress bars."""
from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgemm.errors import EdgemmWarning, as_user_error

console = Console(stderr=True)
# Wide tables stay readable in CI logs and pipes, where rich would otherwise assume 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
F = TypeVar("F", bound=Callable)


def quiet_libraries() -> None:
    """Exporter chatter (deprecations, missing torchvision) hides what matters to the user."""
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("always", category=EdgemmWarning)  # ours are meant for the user: shown once each
    warnings.showwarning = _show_warning
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.utils._pytree", "torchao", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # onnxruntime.quantization warns on the root logger ("Please consider to run pre-processing", "already
    # quantized") about steps edgemm has taken or chosen on purpose.
    logging.getLogger().setLevel(logging.ERROR)


_library_showwarning = warnings.showwarning


def _show_warning(message, category, *args, **kwargs) -> None:  # noqa: ANN001 - the warnings.showwarning signature
    if issubclass(category, EdgemmWarning):
        say("warning:", "bold yellow", str(message))
    else:
        _library_showwarning(message, category, *args, **kwargs)


_debug = False


def set_debug(flag: bool) -> None:
    global _debug
    _debug = flag


def debug_enabled() -> bool:
    """``edgemm --debug`` or EDGEMM_DEBUG=1: let unexpected exceptions through with their traceback."""
    return _debug or os.environ.get("EDGEMM_DEBUG", "").lower() in ("1", "true", "yes")


def say(label: str, style: str, text: str, target: Console | None = None) -> None:
    """``label: text`` with the user's text printed as it is (no rich markup read from paths or messages)."""
    (target or console).print(Text.assemble((label, style), " ", text), highlight=False, soft_wrap=True)


def handles_errors(fn: F) -> F:
    """The CLI's error boundary: whatever goes wrong is printed as 'error: ... / fix: ...' and the command
    exits non-zero, without a traceback (unless debugging). Specific errors are raised where they happen;
    ``as_user_error`` covers Ctrl-C, memory, the file system and, as a last resort, edgemm's own bugs."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BaseException as raised:  # noqa: BLE001 - the boundary: nothing escapes as a traceback
            err = as_user_error(raised)
            if debug_enabled() and err is not raised:
                raise
            say("error:", "bold red", err.args[0])
            if err.hint:
                say("fix:", "bold", err.hint)
            raise typer.Exit(err.exit_code) from None
    return wrapper  # type: ignore[return-value]


@contextmanager
def step_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per task name; yields update(task, done, total)."""
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)
        yield update


@contextmanager
def status(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner whose text follows the work; yields set_text(msg)."""
    with console.status(Text(message)) as spinner:
        yield lambda msg: spinner.update(Text(msg))
