"""Where a figure was measured: CPU, cores, threads, memory, governor, library versions, GPU."""
from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess
import resource
from pathlib import Path
from typing import Any

import psutil

from edgemm.lazy import lazy_import

torch = lazy_import("torch")

LIBRARIES = ("edgemm", "torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "numpy", "tensorrt",
             "torch-tensorrt", "neural-compressor", "neural-compressor-pt", "torch-pruning", "nvidia-modelopt")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            found[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def x86_without_vnni() -> bool:
    """An x86 CPU whose int8 dot products (u8 x s8 pairs summed into int16) can saturate."""
    return platform.machine().lower() in ("x86_64", "amd64") and not (cpu_flags() & VNNI_FLAGS)


def vector_isa(flags: set[str] | None = None) -> str | None:
    """The widest SIMD / int8 dot-product extension of an x86 CPU: two CPUs with one model name ("AMD EPYC") can
    differ here, and int8 speed-ups with it (VNNI sums u8 x s8 products in int32 without saturating)."""
    flags = cpu_flags() if flags is None else flags
    for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                       ("avx512f", "AVX-512, no VNNI"), ("avx2", "AVX2, no VNNI")):
        if flag in flags:
            return name
    return None


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


def _affinity() -> list[int] | None:
    try:
        return sorted(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):  # not offered on macOS
        return None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    freq = psutil.cpu_freq()
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "vector_isa": vector_isa(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "affinity": _affinity(),
        "cpu_max_mhz": round(freq.max, 0) if freq and freq.max else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "threads": threads,
        "versions": versions(),
        "gpu": gpu_info(),
    }
    jetson = _read("/etc/nv_tegra_release")
    if jetson:
        info["jetson"] = {"release": jetson.splitlines()[0], "power_mode": jetson_power_mode()}
    return info


def jetson_power_mode() -> str | None:
    """The nvpmodel mode figures were taken in (`nvpmodel -q`: "NV Power Mode: MAXN"); None if unreadable."""
    try:
        done = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"NV Power Mode:\s*(\S+)", done.stdout)
    return found.group(1) if found else None


def gpu_info() -> dict[str, Any] | None:
    """GPU name and memory via torch when CUDA is usable; None on CPU-only machines."""
    if not torch.available or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}


def describe(info: dict[str, Any]) -> str:
    """One line for reports: 'AMD EPYC (2 cores, 1 thread(s), AVX-512 VNNI), torch 2.13.0, onnxruntime 1.32.0'."""
    v = info.get("versions", {})
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime") if k in v)
    gpu = f", GPU {info['gpu']['name']}" if info.get("gpu") else ""
    threads = f", {info['threads']} thread(s)" if info.get("threads") else ""
    isa = f", {info['vector_isa']}" if info.get("vector_isa") else ""
    return f"{info.get('cpu')} ({info.get('logical_cores')} cores{threads}{isa}){gpu}, {libs}"


def rss_mb() -> float:
    """Current resident set size of this process."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Highest resident set size this process reached (psutil has no portable peak; getrusage does)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
