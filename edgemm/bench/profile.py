"""Where the time goes inside an ONNX graph: ONNX Runtime's own profiler, by op type and by tower.

``edgemm bench --profile`` runs each ONNX artifact once more with profiling on, over the graph ORT
actually executes (after its optimisations: fused Conv+Relu, QLinear ops), and reports kernel time
per op type and per tower of the contract (node names traced back to the inputs they depend on,
``models/graph_towers.py``), plus the stand-alone QuantizeLinear/DequantizeLinear nodes left after ORT's
fusions: each is an int8<->float transition that costs time.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgemm.bench.schema import OpProfile
from edgemm.models.graph_towers import node_towers
from edgemm.lazy import lazy_import

if TYPE_CHECKING:
    from edgemm.models.registry import LoadedModel

onnx = lazy_import("onnx")
ort = lazy_import("onnxruntime")

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


def profile_onnx(model: "LoadedModel", feed: dict[str, np.ndarray], threads: int, runs: int = 20) -> OpProfile:
    """Run ``feed`` ``runs`` times (after one warm-up) under ORT's profiler; aggregate the kernel times."""
    with tempfile.TemporaryDirectory(prefix="edgemm-profile-") as work:
        optimized = Path(work) / "optimized.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3  # ORT warns that an NCHWc-optimised graph is machine-specific: we know
        options.optimized_model_filepath = str(optimized)  # the graph ORT runs, its fusions applied
        options.enable_profiling, options.profile_file_prefix = True, str(Path(work) / "trace")
        session = ort.InferenceSession(str(model.onnx_path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        graph = onnx.load(str(optimized), load_external_data=False)
    tower_of = {i.name: i.tower_name for i in model.spec.inputs}
    return aggregate(_after_warmup(events), graph, tower_of, runs, batch_size=len(next(iter(feed.values()))))


def _after_warmup(events: list[dict]) -> list[dict]:
    """Drop the first run (arena allocation, first-touch): events before the end of the first model_run."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    if not runs:
        return events
    first_end = runs[0]["ts"] + runs[0]["dur"]
    return [e for e in events if e.get("ts", 0) > first_end]


    tower_of = {i.name: i.tower_name for i in model.spec.inputs}
    return aggregate(events, graph, tower_of, runs, batch_size=len(next(iter(feed.values()))))


def aggregate(events: list[dict], graph, tower_of: dict[str, str], runs: int, batch_size: int) -> OpProfile:
    """Kernel events (``cat == "Node"``, ``*_kernel_time``) summed per op type and per tower, per run."""
    towers = node_towers(graph, tower_of)
    by_op: dict[str, float] = defaultdict(float)
    by_tower: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"].removesuffix("_kernel_time")
        ms = event["dur"] / 1000 / runs  # microseconds over every run -> ms per run
        by_op[event.get("args", {}).get("op_name", "?")] += ms
        by_tower[towers.get(node, "unattributed")] += ms
    qdq = standalone_qdq(graph)
    return OpProfile(batch_size=batch_size, runs=runs, kernel_ms=round(sum(by_op.values()), 4),
                     by_op=_sorted(by_op), by_tower=_sorted(by_tower), nodes=len(graph.graph.node),
                     standalone_qdq_nodes=qdq)


def standalone_qdq(graph) -> int:
    """Q/DQ nodes left in a graph ONNX Runtime optimised: each an int8<->float transition at run time."""
    return sum(node.op_type in QDQ_OPS for node in graph.graph.node)


def _sorted(times: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in sorted(times.items(), key=lambda kv: -kv[1])}


def profile_markdown(profile: OpProfile, top: int = 8) -> str:
    """Two small tables: time per tower, and the op types that take most of it."""
    total = profile.kernel_ms or 1.0
    lines = [f"ONNX Runtime profiler, batch {profile.batch_size}, mean of {profile.runs} runs: {profile.kernel_ms:.3f} ms "
             f"of kernel time in {profile.nodes} nodes after ORT's fusions, {profile.standalone_qdq_nodes} of them "
             "stand-alone Q/DQ. Profiling adds overhead to every node, most to small ones: read the shares, and "
             "the latency table for absolute times.", "", "| tower | ms | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.3f} | {100 * ms / total:.1f} % |" for name, ms in profile.by_tower.items()]
    lines += ["", "| op type | ms | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.3f} | {100 * ms / total:.1f} % |" for name, ms in list(profile.by_op.items())[:top]]
    return "\n".join(lines) + "\n"
