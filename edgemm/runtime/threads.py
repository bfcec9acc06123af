"""CPU threads for PyTorch, set for a piece of work and restored after it.

``torch.set_num_threads`` is process-wide: a library that sets it and walks away changes
every later measurement. ONNX Runtime takes its thread count per session instead.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from edgemm.lazy import lazy_import

torch = lazy_import("torch")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` intra-op threads (None: leave as is), then restore."""
    previous = torch.get_num_threads() if threads else None
    if previous is None or previous == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
