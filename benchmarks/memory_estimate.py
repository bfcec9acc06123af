"""How close is the batch memory estimate (``edgemm.runtime.memory``) to what a batch really takes?

For each model and batch size, a fresh process loads the model, notes its RSS, runs one batch and
reads its peak RSS; the growth is compared with the estimate that refuses a ``--batch-size`` that
cannot fit. Prints a Markdown table.

    python benchmarks/memory_estimate.py MODEL [MODEL...] [--batch-size 16 --batch-size 64]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = """
import json, resource, sys
from edgemm.environment import rss_mb
from edgemm.models.registry import resolve_model
from edgemm.runtime import load_session
from edgemm.runtime.memory import activation_bytes_per_item, input_bytes_per_item
model, batch = resolve_model(sys.argv[1]), int(sys.argv[2])
per_item = activation_bytes_per_item(model) + 2 * input_bytes_per_item(model.spec)
session = load_session(model, threads=1)
loaded = rss_mb()  # the model is in memory; the batch's inputs, activations and arenas are not yet
session.run(model.spec.example_inputs({"batch": batch}))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"estimate_mib": batch * per_item / 2**20, "growth_mib": peak - loaded, "backend": session.backend}))
"""


def measure(model: str, batch: int) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, model, str(batch)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch-size", type=int, action="append", dest="batches")
    args = parser.parse_args()
    print("| model | backend | batch | estimate MiB | measured MiB (peak RSS − RSS after load) | estimate / measured |")
    print("|---|---|---:|---:|---:|---:|")
    for model in args.models:
        for batch in args.batches or [16, 64]:
            r = measure(model, batch)
            print(f"| {model} | {r['backend']} | {batch} | {r['estimate_mib']:.0f} | {r['growth_mib']:.0f} | "
                  f"{r['estimate_mib'] / max(r['growth_mib'], 1):.2f} |")

if __name__ == "__main__":
    main()
