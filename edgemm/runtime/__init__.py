"""The runtime layer every other part stands on: sessions, backends, input conversion, scoring.

Export validation, compression gates, ``predict`` and ``bench`` all open a
:class:`Session` through :func:`load_session` and score it with the one
:func:`accuracy` / :func:`fidelity` here (Polygraphy keeps loaders apart from runners
the same way). Backends are one module each in ``edgemm/runtime/backends/``.
"""
from edgemm.runtime.evaluate import accuracy, fidelity, task_outputs
from edgemm.runtime.session import BACKENDS, Backend, DeviceStats, Session, default_backend, load_session
from edgemm.runtime.threads import torch_threads

__all__ = ["BACKENDS", "Backend", "DeviceStats", "Session", "accuracy", "default_backend", "fidelity",
           "load_session", "task_outputs", "torch_threads"]
