"""The device build bundle: everything a device with TensorRT needs to build, check and time the
engines, written where TensorRT is absent. Compress on the host, build on the device, compare in
one report: the bundle's script writes edgemm's report JSON, which ``edgemm report`` reads.

Layout: ``model.<precision>.onnx`` per candidate, ``profile.yaml``, ``build.json`` (the plans, the
trtexec command lines for the profile's TensorRT major, the int8 rule), ``commands.sh`` (the same
commands for a human), ``build_on_device.py`` (stdlib only), ``README.md``, ``manifest.json`` last.
"""
from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from edgemm.artifacts import atomic_path, sha256_file, write_json, write_text
from edgemm.errors import ConfigError
from edgemm.spec import ModelSpec
from edgemm.tensorrt.commands import BuildPlan, as_shell, trtexec_bench, trtexec_build
from edgemm.tensorrt.settings import TensorRTSettings, axis_ranges, shape_ranges

SCRIPT = Path(__file__).with_name("device_script.py")
SCRIPT_NAME = "build_on_device.py"
PLAN_FILE = "build.json"
ENGINES = PurePosixPath("engines")
REPORT_DIR = "device_report"


def bench_shapes(spec: ModelSpec, settings: TensorRTSettings) -> dict[int, dict[str, tuple[int, ...]]]:
    """Input shapes to time at each of the profile's batch sizes (other axes at their typical size)."""
    ranges = axis_ranges(spec, settings)
    batch = ranges.get("batch")
    out = {}
    for size in settings.bench.batch_sizes:
        if batch is not None and not batch.min <= size <= batch.max:
            continue  # reported in the plan's notes, not an error: profiles serve models of different ranges
        sizes = {n: r.opt for n, r in ranges.items()} | ({"batch": size} if batch is not None else {})
        out[size] = {i.name: i.concrete_shape(sizes) for i in spec.inputs}
    return out


def checked_bench_shapes(spec: ModelSpec, settings: TensorRTSettings) -> dict[int, dict[str, tuple[int, ...]]]:
    """The shapes to time, refused when no batch size of the profile fits the model (checked before export)."""
    timed = bench_shapes(spec, settings)
    if not timed:
        batch = axis_ranges(spec, settings)["batch"]
        raise ConfigError(f"none of tensorrt.bench.batch_sizes {settings.bench.batch_sizes} lies in the model's "
                          f"batch range {batch.min}..{batch.max}", "set tensorrt.bench.batch_sizes inside that range")
    return timed


def plans(spec: ModelSpec, settings: TensorRTSettings, candidates: dict[str, Path]) -> list[BuildPlan]:
    shapes = shape_ranges(spec, settings)
    return [BuildPlan(PurePosixPath(onnx.name), ENGINES / f"model.{precision}.engine", precision,  # type: ignore
                      shapes, settings, ENGINES / "timing.cache", ENGINES / f"model.{precision}.layers.json",
                      dynamic=bool(spec.axes))
            for precision, onnx in candidates.items()]


def plan_json(spec: ModelSpec, profile: Any, settings: TensorRTSettings, candidates: dict[str, Path],
              notes: list[str]) -> dict[str, Any]:
    timed = checked_bench_shapes(spec, settings)
    skipped = [b for b in settings.bench.batch_sizes if b not in timed]
    if skipped:
        notes = notes + [f"batch sizes {skipped} lie outside the model's batch range and are not timed"]
    entries = []
    for plan in plans(spec, settings, candidates):
        entries.append({
            "precision": plan.precision, "onnx": str(plan.onnx), "onnx_sha256": sha256_file(candidates[plan.precision]),
            "engine": str(plan.engine), "layer_info": str(plan.layer_info),
            "shapes": {n: [list(s) for s in r] for n, r in plan.shapes.items()},
            "build": trtexec_build(plan),
            "bench": {str(b): trtexec_bench(plan.engine, shapes, settings,
                                            PurePosixPath(REPORT_DIR) / f"times.{plan.precision}.b{b}.json",
                                            plan.dynamic)
                      for b, shapes in timed.items()}})
    return {"format": 1, "model": spec.name, "spec": spec.model_dump(mode="json"), "profile": profile.name,
            "precision_policy": profile.precision, "tensorrt_major": settings.major,
            "min_int8_speedup": settings.min_int8_speedup, "dla_core": settings.dla.core,
            "device": profile.device.model_dump(mode="json") if profile.device else None,
            "timing_cache": str(ENGINES / "timing.cache") if settings.timing_cache else None,
            "batch_sizes": sorted(timed), "candidates": entries, "notes": notes}


def write_bundle(out_dir: Path, spec: ModelSpec, profile: Any, candidates: dict[str, Path],
                 notes: list[str]) -> dict[str, Any]:
    """Write the bundle's files beside the candidate ONNX graphs (already in ``out_dir``); returns the plan."""
    settings: TensorRTSettings = profile.section("tensorrt")
    plan = plan_json(spec, profile, settings, candidates, notes)
    write_json(out_dir / PLAN_FILE, plan)
    write_text(out_dir / "profile.yaml", yaml.safe_dump(profile.model_dump(mode="json", by_alias=True),
                                                         sort_keys=False))
    write_text(out_dir / "commands.sh", _commands_text(plan))
    write_text(out_dir / SCRIPT_NAME, SCRIPT.read_text(encoding="utf-8"))
    (out_dir / SCRIPT_NAME).chmod(0o755)
    write_text(out_dir / "README.md", _readme(plan))
    return plan


def _commands_text(plan: dict[str, Any]) -> str:
    lines = ["#!/usr/bin/env bash", f"# trtexec commands for TensorRT {plan['tensorrt_major']}.x "
             f"({plan['profile']}); build_on_device.py runs these and writes the report.", "set -euo pipefail",
             "mkdir -p engines device_report"]
    for c in plan["candidates"]:
        lines += [f"# {c['precision']}", as_shell(c["build"])]
        lines += [as_shell(cmd) for cmd in c["bench"].values()]
    return "\n".join(lines) + "\n"


def _readme(plan: dict[str, Any]) -> str:
    device = (plan.get("device") or {}).get("name", plan["profile"])
    mode = ((plan.get("device") or {}).get("power_mode") or {}).get("name")
    return f"""# TensorRT build bundle: {plan['model']} for {device}

Written by `edgemm export --target tensorrt --profile {plan['profile']}` on a machine without TensorRT.
Candidates: {', '.join(c['precision'] for c in plan['candidates'])}; TensorRT {plan['tensorrt_major']}.x.

On the device (TensorRT installed; on a Jetson, JetPack brings it and trtexec lives in /usr/src/tensorrt/bin):

    python3 build_on_device.py --dry-run      # what it would run; checks the files
    python3 build_on_device.py                # build, time, keep int8 only where it pays, write the report
{f"    sudo nvpmodel -m ID && sudo jetson_clocks   # the profile's power mode, {mode} (ID: see the dry run)" if mode else ""}

It builds with edgemm's builder when `python3 -c "import edgemm, tensorrt"` works, with trtexec otherwise,
times each engine with trtexec, and writes `device_report/report.json` (edgemm's report format) and
`model.engine` (the engine kept). Back on the host: `edgemm report device_report/report.json CPU_RUN/report.json`.

Notes: {'; '.join(plan['notes']) or 'none'}
"""


def copy_candidate(source: Path, out_dir: Path, precision: str) -> Path:
    target = out_dir / f"model.{precision}.onnx"
    if source.resolve() != target.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return target
