"""``--max-memory``: a run that stops itself, with the step named, before the machine runs out.

A watcher thread reads the process's resident memory (children included: the pytest-style
subprocesses some libraries start) every ``interval`` seconds. Over the limit, it interrupts the
main thread, which stops at its next Python instruction and raises ``MemoryLimitExceeded`` naming
the step and the knobs that bound it. A library call in C (an onnxruntime calibration) only returns
to Python when it is done, so if the run has not stopped ``GRACE_SECONDS`` after the interrupt and
memory has grown to ``HARD_FACTOR`` times the limit, the watcher ends the process itself (exit 137, the
OOM killer's code) after saying why: every artifact is written by rename, and an unfinished stage keeps
its in-progress marker, so nothing is left looking complete.
"""
from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from edgemm.errors import EdgemmError, Interrupted
from edgemm.lazy import lazy_import

psutil = lazy_import("psutil")

HARD_FACTOR = 1.25
GRACE_SECONDS = 2.0  # after the interrupt, how long Python code gets to stop before the hard stop
UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30}


class MemoryLimitExceeded(EdgemmError):
    """The run's resident memory passed ``--max-memory``."""

    exit_code = 137


def parse_size(text: str) -> int:
    """'6GB', '6G', '512MB', '1.5G' or bytes -> bytes (binary units)."""
    number = text.strip().upper().replace("IB", "B")  # GiB reads as GB
    unit = next((u for u in sorted(UNITS, key=len, reverse=True) if u and number.endswith(u)), "")
    try:
        value = float(number[: len(number) - len(unit)] if unit else number)
    except ValueError:
        raise EdgemmError(f"--max-memory {text!r} is not a size", "write it like 6GB, 512MB or 1.5G") from None
    if value <= 0:
        raise EdgemmError(f"--max-memory {text!r} must be positive", "write it like 6GB, 512MB or 1.5G")
    return int(value * UNITS[unit])


def resident_bytes() -> int:
    process = psutil.Process()
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # a child that ended between the listing and the read
            pass
    return total


class MemoryGuard:
    """What the watcher saw; ``step`` is set by the caller as it goes (named in the error)."""

    def __init__(self, limit: int, fix: str):
        self.limit, self.fix = limit, fix
        self.step, self.peak, self.tripped = "start", 0, False

    def error(self) -> MemoryLimitExceeded:
        return MemoryLimitExceeded(
            f"stopped at {self.step}: resident memory reached {self.peak / 2**30:.2f} GB, over --max-memory "
            f"{self.limit / 2**30:.2f} GB", self.fix)


@contextmanager
def memory_guard(limit: int | None, fix: str, interval: float = 0.1) -> Iterator[MemoryGuard]:
    """Watch the block's memory; ``limit=None`` watches nothing (the guard only records steps)."""
    guard, done = MemoryGuard(limit or 0, fix), threading.Event()
    if limit is None:
        yield guard
        return
    if threading.current_thread() is not threading.main_thread():  # the interrupt reaches the main thread only
        raise EdgemmError("--max-memory (max_memory=) stops the run from Python's main thread, and this run is "
                          "in another one", "call compress from the main thread, or without max_memory")
    lock = threading.Lock()  # the watcher interrupts only while the block runs, never after it ended

    def watch() -> None:
        tripped_at = 0.0
        while not done.wait(interval):
            now = resident_bytes()
            guard.peak = max(guard.peak, now)
            with lock:
                if now > limit and not guard.tripped and not done.is_set():
                    guard.tripped, tripped_at = True, time.monotonic()
                    _thread.interrupt_main()  # KeyboardInterrupt in the main thread, turned into the error below
            if guard.tripped and time.monotonic() - tripped_at > GRACE_SECONDS and now > HARD_FACTOR * limit:
                hard_stop(guard)

    # SIGINT may be ignored (a job started in the background by a shell): the interrupt needs its handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=watch, name="edgemm-memory-guard", daemon=True)
    watcher.start()
    try:
        yield guard
    except (KeyboardInterrupt, Interrupted):  # Interrupted: a layer below already translated the Ctrl-C
        if guard.tripped:
            raise guard.error() from None
        raise
    finally:
        tripped = _stop_watching(guard, done, lock)
        watcher.join()
        signal.signal(signal.SIGINT, previous)
        guard.peak = max(guard.peak, resident_bytes())  # a block shorter than one interval has a peak too
    if tripped:  # tripped just as the block ended: its results stand, but the limit was passed
        raise guard.error()


def _stop_watching(guard: MemoryGuard, done: threading.Event, lock: threading.Lock) -> bool:
    """Stop the watcher; an interrupt it sent just before is delivered at some instruction here: take it."""
    while True:
        try:
            with lock:
                done.set()
            if guard.tripped:
                time.sleep(0.01)  # where a pending interrupt lands, if it has not yet
            return guard.tripped
        except KeyboardInterrupt:
            continue


def hard_stop(guard: MemoryGuard) -> None:
    """The run did not stop in time (a long library call): say why, end the child processes, then this one."""
    print(f"error: {guard.error()}; still growing inside a library call, so the process ends now",
          file=sys.stderr, flush=True)
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
    os._exit(MemoryLimitExceeded.exit_code)
