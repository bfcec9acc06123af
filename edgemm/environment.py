"""Where a figure was measured: CPU, threads, governor, library versions, GPU when present."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

LIBRARIES = ("edgemm", "torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "numpy", "tensorrt",
             "torch-tensorrt", "neural-compressor", "torch-pruning", "nvidia-modelopt")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            found[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "threads": threads,
        "versions": versions(),
        "gpu": gpu_info(),
    }
    jetson = _read("/etc/nv_tegra_release")
    if jetson:
        info["jetson"] = {"release": jetson.splitlines()[0]}
    return info


def gpu_info() -> dict[str, Any] | None:
    """GPU name and memory via torch when CUDA is usable; None on CPU-only machines."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}


def describe(info: dict[str, Any]) -> str:
    """One line for reports: 'AMD EPYC ... (2 cores, 1 thread), torch 2.13.0, onnxruntime 1.31.1'."""
    v = info.get("versions", {})
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime") if k in v)
    gpu = f", GPU {info['gpu']['name']}" if info.get("gpu") else ""
    threads = f", {info['threads']} thread(s)" if info.get("threads") else ""
    return f"{info.get('cpu')} ({info.get('logical_cores')} cores{threads}){gpu}, {libs}"
