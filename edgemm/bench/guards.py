"""Warnings a report must shout: noisy figures, int8 or pruned variants that are not faster."""
from __future__ import annotations


def _latency(result: dict) -> dict[int, dict]:
    return {e["batch_size"]: e for e in result["latency"]}


def warnings_for(results: list[dict]) -> list[str]:
    found = []
    for r in results:
        for b, e in _latency(r).items():
            if e["noisy"]:
                lo, hi = e["p50_ci95_ms"]
                found.append(f"noisy measurement: {r['label']} batch {b} p50 {e['p50_ms']:.3f} ms, 95 % CI "
                             f"[{lo:.3f}, {hi:.3f}] is wider than ±5 %; use --min-seconds or an idle machine")
    for a in results:
        for b in results:
            if a is b or a["backend"] != b["backend"]:
                continue
            for size, la in _latency(a).items():
                lb = _latency(b).get(size)
                if lb is None or la["p50_ms"] < lb["p50_ms"]:
                    continue
                if a["int8"] and not b["int8"]:
                    found.append(f"int8 not faster: {a['label']} ({la['p50_ms']:.3f} ms) vs float "
                                 f"{b['label']} ({lb['p50_ms']:.3f} ms) at batch {size} on {a['backend']}")
                elif (a["int8"] == b["int8"] and a["parameters"] and b["parameters"]
                      and a["parameters"] < 0.9 * b["parameters"]):
                    found.append(f"pruned model not faster: {a['label']} ({a['parameters']:,} params, "
                                 f"{la['p50_ms']:.3f} ms) vs {b['label']} ({b['parameters']:,} params, "
                                 f"{lb['p50_ms']:.3f} ms) at batch {size}")
    return found
