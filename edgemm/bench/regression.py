"""CI regression gate: compare a bench report with a baseline report under thresholds.

Results are paired by id (same artifact bytes, same backend). A result whose artifact was
rebuilt has a new id; it is paired by its name and backend only when that pair is unique in
both reports, and the comparison says so. Results without a partner are listed, never
silently skipped, and a run that shares no result with its baseline is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edgemm.artifacts import write_text
from edgemm.bench.schema import BenchReport, Result
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
        if key in limits or LATENCY_KEYS.get(key) in limits:
            raise ConfigError(f"--fail-on names {key!r} twice", "give each threshold once")
        if key == "accuracy" and percent:
            raise ConfigError(f"--fail-on {part!r}: accuracy is in points, not %", "e.g. accuracy=1 (one point)")
        if key == "accuracy":
            limits["accuracy"] = float(value)
        else:
            limits[LATENCY_KEYS[key]] = float(value) / 100 if percent else float(value)
    if not limits:
        raise ConfigError("--fail-on is empty", "e.g. --fail-on 'p50=10%,accuracy=1'")
    return limits


@dataclass
class Comparison:
    regressions: list[str] = field(default_factory=list)
    pairs: list[tuple[Result, Result, str]] = field(default_factory=list)  # (baseline, current, "id" or "name")
    unmatched: list[Result] = field(default_factory=list)  # current results with no baseline partner

    def notes(self) -> list[str]:
        by_name = [f"{cur.label}: paired with the baseline by name ("
                   + ("the baseline, from schema 2, has no content hash)" if base.artifact_sha256 is None
                      else "the artifact's bytes changed)")
                   for base, cur, how in self.pairs if how == "name"]
        return by_name + [f"{r.label}: not in the baseline, not compared" for r in self.unmatched]


def pair_results(baseline: BenchReport, current: BenchReport) -> Comparison:
    old_by_id = {r.id: r for r in baseline.results}
    old_by_key = _unique_by_key(baseline.results)
    new_by_key = _unique_by_key(current.results)
    comparison = Comparison()
    for result in current.results:
        if result.id in old_by_id:
            comparison.pairs.append((old_by_id[result.id], result, "id"))
        elif (result.name, result.backend) in old_by_key and (result.name, result.backend) in new_by_key:
            comparison.pairs.append((old_by_key[(result.name, result.backend)], result, "name"))
        else:
            comparison.unmatched.append(result)
    return comparison


def _unique_by_key(results: list[Result]) -> dict[tuple[str, str], Result]:
    counts: dict[tuple[str, str], int] = {}
    for r in results:
        counts[(r.name, r.backend)] = counts.get((r.name, r.backend), 0) + 1
    return {(r.name, r.backend): r for r in results if counts[(r.name, r.backend)] == 1}


def compare(baseline: BenchReport, current: BenchReport, limits: dict[str, float]) -> Comparison:
    """Each way a current result is worse than its baseline partner beyond the limits."""
    comparison = pair_results(baseline, current)
    for base, result, _ in comparison.pairs:
        comparison.regressions += _worse(base, result, limits)
    return comparison


def _worse(base: Result, result: Result, limits: dict[str, float]) -> list[str]:
    found = []
    if "accuracy" in limits:
        for split, acc in result.accuracy.items():
            if split in base.accuracy:
                drop = 100 * (base.accuracy[split] - acc)
                if drop > limits["accuracy"]:
                    found.append(f"{result.label}: {split} accuracy {100 * acc:.2f} % vs "
                                 f"{100 * base.accuracy[split]:.2f} % (-{drop:.2f} pts > {limits['accuracy']})")
    for lat in result.latency:
        ref = base.at(lat.batch_size)
        if ref is None:
            continue
        for key, limit in limits.items():
            if key == "accuracy":
                continue
            now, then = getattr(lat, key), getattr(ref, key)
            growth = now / then - 1
            if growth > limit:
                found.append(f"{result.label} batch {lat.batch_size}: {key} {now:.3f} ms vs {then:.3f} ms "
                             f"(+{100 * growth:.1f} % > {100 * limit:.0f} %)")
    return found


def to_markdown(comparison: Comparison, where: str, limits: dict[str, float]) -> str:
    """The gate's verdict for a CI comment: what was compared with what, and what got worse."""
    rows = [f"| {cur.label} | {base.label} | {how} |" for base, cur, how in comparison.pairs]
    limit_text = ", ".join(f"{k}: {v:g} pts" if k == "accuracy" else f"{k}: +{100 * v:g} %" for k, v in limits.items())
    verdict = (f"**{len(comparison.regressions)} regression(s)**:\n" + "\n".join(f"- {r}" for r in comparison.regressions)
               if comparison.regressions else "**No regression.**")
    notes = "".join(f"\n- {n}" for n in comparison.notes())
    return (f"## Regression gate against {where}\n\nLimits: {limit_text}.\n\n| result | baseline | paired by |\n"
            f"|---|---|---|\n" + "\n".join(rows) + f"\n\n{verdict}\n" + (f"\nNotes:{notes}\n" if notes else ""))


def gate(baseline: BenchReport, current: BenchReport, limits: dict[str, float], where: str,
         write_to: Path | None = None) -> Comparison:
    """Raise RegressionFound on a regression, ConfigError when nothing could be compared; with ``write_to``,
    the verdict is written there as Markdown first."""
    comparison = compare(baseline, current, limits)
    if write_to is not None and comparison.pairs:  # no verdict ("no regression") when nothing was compared
        write_text(write_to, to_markdown(comparison, where, limits))
    if not comparison.pairs:
        raise ConfigError(f"no result of this run matches the baseline {where} (neither by artifact + backend nor by "
                          "name + backend)", "bench the same artifacts on the same backends as the baseline")
    if comparison.regressions:
        raise RegressionFound(f"{len(comparison.regressions)} regression(s) against {where}: "
                              + "; ".join(comparison.regressions),
                              "investigate, or refresh the baseline if the change is intended")
    return comparison
