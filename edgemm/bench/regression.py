"""CI regression gate: compare a bench report with a baseline report under thresholds."""
from __future__ import annotations

import json
import re
from pathlib import Path

from edgemm.errors import ConfigError, EdgemmError

LATENCY_KEYS = {"p50": "p50_ms", "p90": "p90_ms", "p99": "p99_ms", "mean": "mean_ms"}


class RegressionFound(EdgemmError):
    exit_code = 5


def parse_fail_on(text: str) -> dict[str, float]:
    """'p50=10%,p90=15%,accuracy=1' -> {'p50_ms': 0.10, 'p90_ms': 0.15, 'accuracy': 1.0 (points)}."""
    limits = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(p50|p90|p99|mean|accuracy)\s*=\s*([0-9.]+)\s*(%?)", part)
        if not match:
            raise ConfigError(f"--fail-on: cannot read {part!r}",
                              "use e.g. 'p50=10%,p90=15%,accuracy=1' (latency in %, accuracy in points)")
        key, value, percent = match.groups()
        if key == "accuracy":
            limits["accuracy"] = float(value)
        else:
            limits[LATENCY_KEYS[key]] = float(value) / 100 if percent else float(value)
    if not limits:
        raise ConfigError("--fail-on is empty", "e.g. --fail-on 'p50=10%,accuracy=1'")
    return limits


def load_report(path: str | Path) -> dict:
    path = Path(path)
    path = path / "report.json" if path.is_dir() else path
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read bench report {path} ({err})", "give a report.json written by edgemm bench") from None


def regressions(baseline: dict, current: dict, limits: dict[str, float]) -> list[str]:
    """Each way the current report is worse than the baseline beyond the limits (matched by label and batch)."""
    old = {r["label"]: r for r in baseline["results"]}
    found = []
    for r in current["results"]:
        base = old.get(r["label"])
        if base is None:
            continue
        for split, acc in r["accuracy"].items():
            if "accuracy" in limits and split in base["accuracy"]:
                drop = 100 * (base["accuracy"][split] - acc)
                if drop > limits["accuracy"]:
                    found.append(f"{r['label']}: {split} accuracy {100 * acc:.2f} % vs {100 * base['accuracy'][split]:.2f} % "
                                 f"(-{drop:.2f} pts > {limits['accuracy']})")
        base_lat = {e["batch_size"]: e for e in base["latency"]}
        for entry in r["latency"]:
            ref = base_lat.get(entry["batch_size"])
            for key, limit in limits.items():
                if key == "accuracy" or ref is None:
                    continue
                growth = entry[key] / ref[key] - 1
                if growth > limit:
                    found.append(f"{r['label']} batch {entry['batch_size']}: {key} {entry[key]:.3f} ms vs "
                                 f"{ref[key]:.3f} ms (+{100 * growth:.1f} % > {100 * limit:.0f} %)")
    return found
