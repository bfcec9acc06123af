"""Time an engine the way ``trtexec --exportTimes`` does, where trtexec is missing (TensorRT from pip
ships no trtexec): ``python -m edgemm.tensorrt.timing --loadEngine=E --shapes=... --warmUp=MS
--duration=S --exportTimes=F`` writes one entry per query with ``latencyMs`` (inputs in, outputs out:
host to host) and ``computeMs`` (CUDA events around the engine), the fields the bundle script reads."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgemm.artifacts import write_json
from edgemm.models.registry import resolve_model
from edgemm.runtime import load_session


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``image:1x3x32x32,text:1x8`` (names quoted with '' when they hold a colon)."""
    shapes = {}
    for part in text.split(","):
        name, _, dims = part.rpartition(":")
        shapes[name.strip("'")] = tuple(int(d) for d in dims.split("x"))
    return shapes


def time_engine(engine: Path, shapes: dict[str, tuple[int, ...]], warmup_ms: float, duration_s: float) -> list[dict]:
    model = resolve_model(str(engine))
    session = load_session(model, "tensorrt")
    sizes = {}
    for inp in model.spec.inputs:
        for axis, name in inp.dynamic_axes.items():
            sizes[name] = shapes[inp.name][axis] if inp.name in shapes else model.spec.axes[name].opt
    feed = model.spec.example_inputs(sizes, seed=0)
    end = time.perf_counter() + warmup_ms / 1000
    while time.perf_counter() < end:
        session.run(feed)
    rows, origin = [], time.perf_counter()
    end = origin + duration_s
    session.start_timing()
    while time.perf_counter() < end or not rows:
        start = time.perf_counter()
        session.run(feed)
        stop = time.perf_counter()
        rows.append({"startEnqMs": 1000 * (start - origin), "endD2hMs": 1000 * (stop - origin),
                     "latencyMs": 1000 * (stop - start)})
    for row, device_ms in zip(rows, session.stop_timing().get("device_ms", [])):
        row["computeMs"] = device_ms
    return rows


def main(argv: list[str]) -> int:
    args = dict(a.lstrip("-").split("=", 1) for a in argv if "=" in a)
    rows = time_engine(Path(args["loadEngine"]), parse_shapes(args["shapes"]) if "shapes" in args else {},
                       float(args.get("warmUp", 200)), float(args.get("duration", 3)))
    write_json(args["exportTimes"], rows)
    lat = np.median([r["latencyMs"] for r in rows])
    print(f"{len(rows)} queries, median latency {lat:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
