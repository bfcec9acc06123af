"""A bench backend in one file: ONNX Runtime on the CPU that also reports its own per-call time
and peak memory for timed blocks, the way a GPU session reports device time and device memory."""
from __future__ import annotations

import time

from edgemm.environment import rss_mb
from edgemm.runtime.backends.ort import OrtOptions, OrtSession
from edgemm.runtime.session import BACKENDS, Backend


class SelfTimedSession(OrtSession):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.timing: list[float] | None = None
        self.calls = 0

    def run(self, feed):
        self.calls += 1
        if self.timing is None:
            return super().run(feed)
        start = time.perf_counter()
        out = super().run(feed)
        self.timing.append((time.perf_counter() - start) * 1000)
        return out

    def start_timing(self) -> None:
        self.timing = []

    def stop_timing(self):
        times, self.timing = self.timing or [], None
        return {"device_ms": times, "peak_memory_mb": rss_mb()}


@BACKENDS.register
class SelfTimedOrt(Backend):
    name = "ort-cpu-selftimed"
    description = "ONNX Runtime CPU, timing its own calls (test-only)"
    config = OrtOptions
    consumes = "onnx"
    requires = ("onnxruntime",)
    supports = ("cpu",)

    def load(self, model, threads=None, options=None):
        return SelfTimedSession(model, threads, ["CPUExecutionProvider"], self.name, options or OrtOptions())
