#!/usr/bin/env python3
"""Build, check and time this bundle's TensorRT engines on the device; written by
`edgemm export --target tensorrt`. Standard library only: it needs TensorRT (trtexec) and nothing
else, and installs nothing.

    python3 build_on_device.py --dry-run         # print what it would run, check the files
    python3 build_on_device.py                   # build, time, keep int8 only where it pays, report
    sudo python3 build_on_device.py --set-power-mode   # Jetson: switch to the profile's power mode first

Engines are built with edgemm's builder when `import edgemm, tensorrt` works (--builder edgemm),
with trtexec otherwise; every engine is timed with trtexec (--exportTimes: per-query raw times).
Output: engines/, device_report/report.json (edgemm's bench report format, schema 3),
device_report/decision.json, and model.engine (+ model.engine.json: what it is valid for).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAN = HERE / "build.json"
REPORT_DIR = HERE / "device_report"
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
RAILS = ("VDD_IN", "VIN_SYS_5V0", "POM_5V_IN")  # total-input rails, by module (tegrastats)


class Refused(Exception):
    """A problem the user must fix; printed as error + fix, exit 2."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


# -- small helpers -------------------------------------------------------------------------------
def say(label: str, text: str) -> None:
    print(f"{label} {text}", flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def output_of(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout + done.stderr if done.returncode == 0 else None


# -- where we are ----------------------------------------------------------------------------------
def find_trtexec(given: str | None) -> str | None:
    for candidate in (given, shutil.which("trtexec"), *TRTEXEC_PATHS):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def tensorrt_version(trtexec: str | None) -> str | None:  # noqa: C901 - four places to look, in order
    """From the Python bindings, the Debian package (JetPack) or trtexec's banner ([TensorRT v100300])."""
    text = output_of([sys.executable, "-c", "import tensorrt; print(tensorrt.__version__)"])
    if text:
        return text.strip().splitlines()[-1]
    text = output_of(["dpkg-query", "-W", "-f=${Version}", "tensorrt"]) or output_of(
        ["dpkg-query", "-W", "-f=${Version}", "libnvinfer10"])
    if text and re.match(r"\d+\.\d+", text):
        return re.match(r"\d+\.\d+(\.\d+)*", text).group(0)
    if trtexec:
        done = subprocess.run([trtexec, "--help"], capture_output=True, text=True)
        found = re.search(r"TensorRT v(\d+)", done.stdout + done.stderr)
        if found:
            code = int(found.group(1))  # 100300 = 10.3.0; 8.5: 8503 = 8.5.3
            return f"{code // 10000}.{code // 100 % 100}.{code % 100}" if code >= 10000 else \
                f"{code // 1000}.{code // 100 % 10}.{code % 100}"
    return None


def jetson_release(release_file: Path = TEGRA_RELEASE) -> str | None:
    """``R36.4.0`` from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.0, ..."), None off Jetson."""
    try:
        text = release_file.read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{found.group(1)}.{found.group(2)}" if found else None


def gpu_facts(plan: dict) -> dict:
    """GPU name and compute capability: nvidia-smi, else torch, else the profile's (said so)."""
    text = output_of(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    if text and "," in text:
        name, cap = [s.strip() for s in text.strip().splitlines()[0].split(",")[:2]]
        return {"name": name, "compute_capability": cap, "source": "nvidia-smi"}
    text = output_of([sys.executable, "-c", "import torch; p = torch.cuda.get_device_properties(0); "
                      "print(f'{p.name}|{p.major}.{p.minor}')"])
    if text and "|" in text:
        name, cap = text.strip().splitlines()[-1].split("|")
        return {"name": name, "compute_capability": cap, "source": "torch"}
    device = plan.get("device") or {}
    return {"name": device.get("name"), "compute_capability": device.get("compute_capability"),
            "source": "profile (not read from the device)"}


def power_mode() -> str | None:
    text = output_of(["nvpmodel", "-q"])
    if not text:
        return None
    found = re.search(r"NV Power Mode:\s*(\S+)", text)
    return found.group(1) if found else None


def set_power_mode(plan: dict, dry_run: bool) -> list[list[str]]:
    wanted = (plan.get("device") or {}).get("power_mode") or {}
    cmds = []
    if wanted.get("nvpmodel_id") is not None:
        cmds.append(["nvpmodel", "-m", str(wanted["nvpmodel_id"])])
    if wanted.get("jetson_clocks", True):
        cmds.append(["jetson_clocks"])
    for cmd in cmds:
        say("run:" if not dry_run else "would run:", shlex.join(cmd))
        try:
            failed = not dry_run and subprocess.run(cmd).returncode != 0
        except OSError as err:
            raise Refused(f"{shlex.join(cmd)}: {err.strerror}", "run without --set-power-mode") from None
        if failed:
            raise Refused(f"{shlex.join(cmd)} failed", "run it with sudo first, then this script without "
                                                        "--set-power-mode")
    return cmds


# -- checks ----------------------------------------------------------------------------------------
def check_files(plan: dict) -> None:
    for c in plan["candidates"]:
        path = HERE / c["onnx"]
        if not path.is_file():
            raise Refused(f"{path} is missing", "copy the whole bundle folder to the device")
        if sha256(path) != c["onnx_sha256"]:
            raise Refused(f"{path} differs from the one edgemm exported (sha256 mismatch)",
                          "copy the bundle again; do not edit the ONNX files in it")


def check_version(plan: dict, version: str | None) -> None:
    if version is None:
        return
    major = int(version.split(".")[0])
    if major != plan["tensorrt_major"]:
        raise Refused(f"this device has TensorRT {version}; the bundle was made for TensorRT {plan['tensorrt_major']}"
                      f" (profile {plan['profile']})", f"export again with a profile for TensorRT {major} "
                      "(`edgemm profiles list`), or install the TensorRT the profile names")


# -- build and time --------------------------------------------------------------------------------
def edgemm_builder_available() -> bool:
    return output_of([sys.executable, "-c", "import edgemm.tensorrt.builder, tensorrt"]) is not None


def build_command(candidate: dict, builder: str, trtexec: str) -> list[str]:
    if builder == "edgemm":
        return [sys.executable, "-m", "edgemm.tensorrt.builder", str(PLAN), candidate["precision"]]
    return [trtexec, *candidate["build"][1:]]


def time_command(cmd: list[str], timer: str, trtexec: str) -> list[str]:
    """trtexec, or edgemm's stand-in that reads the same flags and writes the same --exportTimes fields."""
    if timer == "edgemm":
        return [sys.executable, "-m", "edgemm.tensorrt.timing", *cmd[1:]]
    return [trtexec, *cmd[1:]]


def run_logged(cmd: list[str], log: Path) -> bool:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        return subprocess.run(cmd, cwd=HERE, stdout=f, stderr=subprocess.STDOUT).returncode == 0


def time_engine(cmd: list[str], times_file: Path, log: Path, tegrastats: bool) -> dict | None:
    """trtexec's raw per-query times (and mean power over the run on a Jetson)."""
    watcher, power_log = None, log.with_suffix(".tegrastats.log")
    if tegrastats and shutil.which("tegrastats"):
        power_log.unlink(missing_ok=True)
        watcher = subprocess.Popen(["tegrastats", "--interval", "100", "--logfile", str(power_log)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ok = run_logged(cmd, log)
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(timeout=10)
    if not ok or not times_file.is_file():
        return None
    timing = parse_times(json.loads(times_file.read_text()))
    if watcher is not None and power_log.is_file():
        timing["power_mw"] = parse_tegrastats(power_log.read_text(errors="replace"))
    return timing


def parse_times(rows: list[dict]) -> dict:
    """trtexec --exportTimes: one entry per query; latency = H2D + compute + D2H [TRT §3]."""
    rows = [r for r in rows if "latencyMs" in r]
    if not rows:
        raise Refused("trtexec wrote no timed queries", "check the log in device_report/")
    wall = max(r.get("endD2hMs", r.get("endComputeMs", 0)) for r in rows) - min(r.get("startEnqMs", 0) for r in rows)
    return {"latency_ms": [float(r["latencyMs"]) for r in rows], "compute_ms": [float(r["computeMs"]) for r in rows],
            "wall_ms": float(wall)}


def parse_tegrastats(text: str) -> float | None:
    """Mean instantaneous power of the module's input rail (or the sum of rails) over the run, in mW."""
    per_line = []
    for line in text.splitlines():
        rails = {name: int(cur) for name, cur, _ in re.findall(r"(\w+) (\d+)mW/(\d+)mW", line)}
        if rails:
            total = next((rails[r] for r in RAILS if r in rails), sum(rails.values()))
            per_line.append(total)
    return statistics.fmean(per_line) if per_line else None


# -- decide and report -----------------------------------------------------------------------------
def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def decide(plan: dict, timings: dict[str, dict[int, dict]]) -> dict:
    """The engine to ship. int8 must pay for itself: kept only when at least min_int8_speedup faster
    than fp16 at every batch size both were timed at (ModelOpt's ONNX autotune keeps Q/DQ at >= 1.02x)."""
    built = [p for p in timings if timings[p]]
    if not built:
        raise Refused("no engine could be built and timed", "read the logs in device_report/")
    policy, need = plan["precision_policy"], plan["min_int8_speedup"]
    common = sorted(set.intersection(*(set(timings[p]) for p in built)))
    speedups = {}
    if "int8" in built and "fp16" in built:
        speedups = {b: p50(timings["fp16"][b]["latency_ms"]) / p50(timings["int8"][b]["latency_ms"]) for b in common}
    if len(built) == 1:
        chosen, why = built[0], "the only engine built and timed"
    elif not common:
        chosen = "fp16" if "fp16" in built else built[0]
        why = "the engines were timed at no common batch size, so they could not be compared"
    elif policy == "best":
        chosen = min(built, key=lambda p: p50(timings[p][common[-1]]["latency_ms"]))
        why = f"fastest at batch {common[-1]}"
    elif speedups:
        pays = all(s >= need for s in speedups.values())
        chosen = "int8" if pays else "fp16"
        shown = ", ".join(f"batch {b}: {s:.2f}x" for b, s in sorted(speedups.items()))
        why = (f"int8 vs fp16 {shown}: " + (f"pays for itself (>= {need}x)" if pays
                                            else f"below {need}x at some batch size, so fp16 ships"))
    else:
        chosen, why = built[0], f"policy {policy}"
    return {"chosen": chosen, "why": why, "speedup_int8_vs_fp16": {str(b): s for b, s in speedups.items()},
            "built": built}


def report(plan: dict, timings: dict[str, dict[int, dict]], env: dict, decision: dict) -> dict:
    """edgemm's bench report (schema 3): one result per engine, raw samples kept."""
    results = []
    for c in plan["candidates"]:
        per_batch = timings.get(c["precision"]) or {}
        if not per_batch:
            continue
        engine = HERE / c["engine"]
        digest = sha256(engine)
        latency, power = [], {}
        for batch, t in sorted(per_batch.items()):
            sizes = {"batch": batch} if "batch" in (plan["spec"].get("axes") or {}) else {}
            latency.append({"batch_size": batch, "warmup": 0, "samples_ms": t["latency_ms"],
                            "device_samples_ms": t["compute_ms"], "inputs": "generated by trtexec", "sizes": sizes})
            if t.get("power_mw"):
                items = batch * len(t["latency_ms"])
                power[f"b{batch}_mean_mw"] = t["power_mw"]
                power[f"b{batch}_mj_per_item"] = t["power_mw"] * t["wall_ms"] / 1000 / items
        results.append({
            "id": f"{digest[:12]}-tensorrt", "name": f"{plan['model']} ({c['precision']} engine)",
            "artifact": str(engine), "artifact_sha256": digest, "kind": "engine", "model": plan["model"],
            "backend": "tensorrt", "precision": c["precision"], "size_bytes": engine.stat().st_size,
            "trained": True, "latency": latency, "power": power})
    machine = {"cpu": platform.processor() or platform.machine(), "logical_cores": os.cpu_count(), "threads": None,
               "versions": {"tensorrt": env["tensorrt"] or "unknown", "python": platform.python_version()},
               "gpu": env["gpu"], "jetson_release": env["jetson"], "power_mode": env["power_mode"],
               "profile": plan["profile"], "decision": decision}
    bench = plan["candidates"][0]["bench"]
    first = next(iter(bench.values()))
    warm = next((a.split("=", 1)[1] for a in first if a.startswith("--warmUp=")), "0")
    secs = next((a.split("=", 1)[1] for a in first if a.startswith("--duration=")), "0")
    settings = {"batch_sizes": plan["batch_sizes"], "threads": 1, "splits": [],
                "timing": {"warmup": 0, "min_iterations": 1, "min_seconds": float(secs), "max_iterations": 10**9,
                           "rounds": 1}}
    warnings = [f"timed by {env['timer']} after {warm} ms of warm-up; latency = inputs in + GPU compute + outputs "
                "out, device samples = GPU compute"] + [f"decision: {decision['chosen']} ({decision['why']})"]
    return {"schema_version": 3, "tool": f"edgemm device bundle (timed by {env['timer']})",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
            "settings": settings, "results": results, "warnings": warnings}


def clear_outputs(plan: dict) -> None:
    for name in ("model.engine", "model.engine.json"):
        (HERE / name).unlink(missing_ok=True)
    for c in plan["candidates"]:
        for name in (c["engine"], c["engine"] + ".json", c["layer_info"]):
            (HERE / name).unlink(missing_ok=True)
    if REPORT_DIR.is_dir():
        shutil.rmtree(REPORT_DIR)


def release(version: str | None) -> str | None:
    """X.Y.Z: the Python bindings say 10.3.0, the Debian package 10.3.0.30; one engine, one key."""
    return ".".join(version.split(".")[:3]) if version else None


def engine_key(env: dict, precision: str) -> dict:
    gpu = env["gpu"] or {}
    return {"tensorrt": release(env["tensorrt"]), "compute_capability": gpu.get("compute_capability"),
            "jetson": env["jetson"], "precision": precision}


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    parser.add_argument("--builder", choices=("auto", "edgemm", "trtexec"), default="auto")
    parser.add_argument("--trtexec", help="path to trtexec (default: PATH, then /usr/src/tensorrt/bin)")
    parser.add_argument("--set-power-mode", action="store_true", help="Jetson: nvpmodel + jetson_clocks (root)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Refused as err:
        print(f"error: {err}\n  fix: {err.fix}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    try:
        plan = json.loads(PLAN.read_text())
        plan["candidates"], plan["tensorrt_major"]  # noqa: B018 - the keys every step reads
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise Refused(f"{PLAN} is missing or unreadable ({type(err).__name__})",
                      "run this script from an edgemm TensorRT bundle folder; export the bundle again if it was "
                      "edited") from None
    check_files(plan)
    trtexec = find_trtexec(args.trtexec)
    with_edgemm = edgemm_builder_available()  # edgemm and TensorRT's Python bindings both importable
    builder = args.builder if args.builder != "auto" else ("edgemm" if with_edgemm else "trtexec")
    timer = "edgemm" if trtexec is None and with_edgemm else "trtexec"
    missing = ("--builder edgemm needs `import edgemm, tensorrt`" if builder == "edgemm" and not with_edgemm else
               "--builder trtexec: trtexec not found" if builder == "trtexec" and trtexec is None else
               "neither trtexec nor edgemm with TensorRT's Python bindings" if trtexec is None and not with_edgemm
               else None)
    if missing and not args.dry_run:
        raise Refused(f"{missing} (looked in PATH and /usr/src/tensorrt/bin)",
                      "install TensorRT (JetPack ships trtexec in /usr/src/tensorrt/bin) or pass --trtexec PATH")
    version = tensorrt_version(trtexec)
    check_version(plan, version)
    on_jetson = jetson_release() is not None
    if args.set_power_mode and not (on_jetson and shutil.which("nvpmodel")):
        raise Refused("--set-power-mode switches a Jetson's nvpmodel mode; this is not a Jetson (or nvpmodel is "
                      "not on PATH)", "run without --set-power-mode")
    if args.set_power_mode:
        set_power_mode(plan, args.dry_run)
    env = {"tensorrt": version, "jetson": jetson_release(), "timer": timer,
           "power_mode": power_mode() if on_jetson else None,
           "gpu": gpu_facts(plan) if not args.dry_run else None}
    wanted = ((plan.get("device") or {}).get("power_mode") or {}).get("name")
    if on_jetson and wanted and env["power_mode"] != wanted:
        say("warning:", f"power mode is {env['power_mode']}, the profile times in {wanted}: rerun with sudo and "
                        "--set-power-mode for comparable figures")
    exe = trtexec or "trtexec"
    if args.dry_run:
        say("dry run:", f"TensorRT {plan['tensorrt_major']}.x bundle for {plan['profile']}; builder {builder}, "
                        f"timer {timer}; trtexec {trtexec or 'not found here'}; TensorRT {version or 'not found here'}")
        for c in plan["candidates"]:
            say(f"build {c['precision']}:", shlex.join(build_command(c, builder, exe)))
            for batch, cmd in c["bench"].items():
                say(f"time {c['precision']} batch {batch}:", shlex.join(time_command(cmd, timer, exe)))
        mode = (plan.get("device") or {}).get("power_mode")
        if mode:
            switch = f"sudo nvpmodel -m {mode['nvpmodel_id']} && " if mode.get("nvpmodel_id") is not None else \
                f"sudo nvpmodel -m <the ID of {mode['name']} in /etc/nvpmodel.conf> && "
            say("power mode:", f"{mode['name']}: {switch}sudo jetson_clocks (before timing)")
        say("then:", f"keep int8 only if >= {plan['min_int8_speedup']}x faster than fp16 (policy "
                     f"{plan['precision_policy']}); write {REPORT_DIR.name}/report.json and model.engine")
        return 0
    clear_outputs(plan)  # a failed rerun must not leave the last run's engine and report looking current
    (HERE / "engines").mkdir(exist_ok=True)
    timings: dict[str, dict[int, dict]] = {}
    for c in plan["candidates"]:
        p = c["precision"]
        say("building", f"{p} engine with {builder} ...")
        if not run_logged(build_command(c, builder, exe), REPORT_DIR / f"build.{p}.log"):
            say("failed:", f"{p} build; see {REPORT_DIR.name}/build.{p}.log" +
                (" (int8 dropped: fp16 ships)" if p == "int8" else ""))
            timings[p] = {}
            continue
        write_atomic(HERE / (c["engine"] + ".json"), json.dumps(
            {"key": engine_key(env, p), "spec": plan["spec"], "shapes": c["shapes"], "built_by": builder,
             "onnx_sha256": c["onnx_sha256"]}, indent=2))
        timings[p] = {}
        for batch, cmd in c["bench"].items():
            times = HERE / next(a.split("=", 1)[1] for a in cmd if a.startswith("--exportTimes="))
            got = time_engine(time_command(cmd, timer, exe), times, REPORT_DIR / f"time.{p}.b{batch}.log", on_jetson)
            if got is None:
                say("failed:", f"timing {p} at batch {batch}; see {REPORT_DIR.name}/time.{p}.b{batch}.log")
                continue
            timings[p][int(batch)] = got
            say("timed", f"{p} batch {batch}: p50 {p50(got['latency_ms']):.3f} ms "
                         f"(GPU compute {p50(got['compute_ms']):.3f} ms, {len(got['latency_ms'])} queries)")
    decision = decide(plan, timings)
    chosen = next(c for c in plan["candidates"] if c["precision"] == decision["chosen"])
    copy_atomic(HERE / chosen["engine"], HERE / "model.engine")
    copy_atomic(HERE / (chosen["engine"] + ".json"), HERE / "model.engine.json")
    write_atomic(REPORT_DIR / "decision.json", json.dumps(decision, indent=2))
    write_atomic(REPORT_DIR / "report.json", json.dumps(report(plan, timings, env, decision), indent=2))
    say("kept:", f"{decision['chosen']} ({decision['why']}) -> model.engine")
    say("wrote", f"{REPORT_DIR.name}/report.json: on the host, `edgemm report` reads it next to CPU reports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
