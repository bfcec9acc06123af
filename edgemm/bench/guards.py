"""Warnings a report must shout: noisy figures, int8 or pruned variants that are not faster."""
from __future__ import annotations

from edgemm.bench.schema import Result


def warnings_for(results: list[Result]) -> list[str]:
    found = []
    for r in results:
        for lat in r.latency:
            if lat.noisy:
                lo, hi = lat.p50_ci95_ms
                found.append(f"noisy measurement: {r.label} batch {lat.batch_size} p50 {lat.p50_ms:.3f} ms, 95 % CI "
                             f"[{lo:.3f}, {hi:.3f}] is wider than ±5 %; use --min-seconds or an idle machine")
    for a in results:
        for b in results:
            if a is b or a.backend != b.backend:
                continue
            for la in a.latency:
                lb = b.at(la.batch_size)
                if lb is None or la.p50_ms < lb.p50_ms:
                    continue
                if a.precision == "int8" and b.precision != "int8":
                    found.append(f"int8 not faster: {a.label} ({la.p50_ms:.3f} ms) vs {b.label} ({b.precision}, "
                                 f"{lb.p50_ms:.3f} ms) at batch {la.batch_size}")
                elif (a.precision == b.precision and a.parameters and b.parameters
                      and a.parameters < 0.9 * b.parameters):
                    found.append(f"pruned model not faster: {a.label} ({a.parameters:,} params, "
                                 f"{la.p50_ms:.3f} ms) vs {b.label} ({b.parameters:,} params, "
                                 f"{lb.p50_ms:.3f} ms) at batch {la.batch_size}")
    return found
