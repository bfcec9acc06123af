"""Accuracy of models on a split as it is and with one tower's inputs blanked (the contract's empty value:
pad ids, zeros), the check compress runs on its gate split. On the real model it showed where the out-of-domain
loss of a pruned image tower came from: with the caption blanked, test accuracy equals the ood accuracy.

    python benchmarks/blanked_accuracy.py runs/tuxpaint/model RUN/03-distill --data ~/.cache/edgemm/tuxpaint/data \\
        --split test --split ood --tower text
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from edgemm.data.datasets import load_split  # noqa: E402
from edgemm.models.registry import resolve_model  # noqa: E402
from edgemm.runtime import load_session  # noqa: E402
from edgemm.runtime.evaluate import correct  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", action="append", default=None)
    parser.add_argument("--tower", action="append", default=None, help="towers to blank, one at a time")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    splits, towers = args.split or ["test"], args.tower or []
    columns = [(s, None) for s in splits] + [(s, t) for s in splits for t in towers]
    print("| model | " + " | ".join(s if t is None else f"{s}, {t} blanked" for s, t in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for ref in args.models:
        model = resolve_model(ref)
        session = load_session(model, threads=args.threads)
        data = {s: load_split(args.data, s, model.spec) for s in splits}
        cells = [100 * correct(session, data[s] if t is None else data[s].blanked(model.spec, t)).mean()
                 for s, t in columns]
        print(f"| {ref} | " + " | ".join(f"{c:.1f} %" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
