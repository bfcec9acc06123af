"""Shared CLI plumbing: error handling, quiet heavy libraries, progress bars."""
from __future__ import annotations

import functools
import logging
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgemm.errors import EdgemmError, EdgemmWarning

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
        console.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        _library_showwarning(message, category, *args, **kwargs)


def handles_errors(fn: F) -> F:
    """Print an EdgemmError as 'error: ... / fix: ...' and exit with its code, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except EdgemmError as err:
            # escape(): messages quote lists and extras ("['text']", "edgemm[inc]") that rich would read as markup
            console.print(f"[bold red]error:[/] {escape(err.args[0])}", highlight=False, soft_wrap=True)
            if err.hint:
                console.print(f"[bold]fix:[/] {escape(err.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
    return wrapper  # type: ignore[return-value]


@contextmanager
def step_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per task name; yields update(task, done, total)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
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
    with console.status(message) as spinner:
        yield lambda msg: spinner.update(msg)
