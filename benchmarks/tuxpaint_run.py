"""The compress + bench half of ``benchmarks/tuxpaint.py run``: each recipe as its own ``edgemm compress``
process (so its peak RSS and wall time are its own), then one summary table."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgemm.artifacts import write_text
from edgemm.environment import cpu_model

BATCHES = ("1", "8")


def compress_once(model: Path, data: Path, recipe: str, out: Path) -> dict:
    """One compress run; wall seconds, peak RSS (GNU time when present) and its report."""
    command = [sys.executable, "-m", "edgemm.cli.main", "compress", str(model), "--data", str(data),
               "--recipe", recipe, "-o", str(out), "--min-iterations", "40", "--min-seconds", "1", "--rounds", "2"]
    for b in BATCHES:
        command += ["--batch-size", b]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").is_file() else []
    start = time.perf_counter()
    done = subprocess.run(timer + command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    row = {"recipe": recipe, "exit": done.returncode, "seconds": round(seconds), "peak_rss_gb":
           round(int(rss.group(1)) / 2**20, 2) if rss else None}
    error = [line for line in done.stderr.splitlines() if line.startswith(("error:", "fix:"))]
    if error:
        row["error"] = " / ".join(error)
    report = out / "report.json"
    if report.is_file():
        row["report"] = json.loads(report.read_text())
    return row


def summary(rows: list[dict], head: dict) -> str:
    lines = ["| recipe | exit | test acc | ood acc | b1 p50 ms | b8 p50 ms | b1 vs ORT fp32 | b8 vs ORT fp32 | "
             "compress s | peak RSS GB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        report = row.get("report")
        if not report:
            lines.append(f"| {row['recipe']} | {row['exit']} | {row.get('error', '-')} | | | | | | {row['seconds']} | "
                         f"{row['peak_rss_gb']} |")
            continue
        ort, final = report["results"][1], report["results"][2]
        p50 = {b: {r["id"]: next(x["p50_ms"] for x in r["latency"] if x["batch_size"] == int(b)) for r in (ort, final)}
               for b in BATCHES}
        acc = final.get("accuracy", {})
        lines.append(f"| {row['recipe']} | {row['exit']} | {100 * acc.get('test', 0):.1f} % | {100 * acc.get('ood', 0):.1f} % | "
                     f"{p50['1'][final['id']]:.1f} | {p50['8'][final['id']]:.1f} | "
                     f"{p50['1'][ort['id']] / p50['1'][final['id']]:.2f}× | {p50['8'][ort['id']] / p50['8'][final['id']]:.2f}× | "
                     f"{row['seconds']} | {row['peak_rss_gb']} |")
    ort_row = next((r["report"]["results"][1] for r in rows if r.get("report")), None)
    reference = ""
    if ort_row:
        acc = ort_row.get("accuracy", {})
        reference = f"\nORT fp32 (the uncompressed model): test {100 * acc.get('test', 0):.1f} %, ood {100 * acc.get('ood', 0):.1f} %.\n"
    heads = "\n".join(f"| {name} | {100 * v['val']:.1f} % | {100 * v['test']:.1f} % | {100 * v['ood']:.1f} % |"
                      for name, v in head.items() if name != "sizes")
    return (f"# effnet-minilm on Tux Paint stamps\n\nMeasured on {cpu_model()}, 1 thread, by `python benchmarks/tuxpaint.py run` "
            f"({time.strftime('%Y-%m-%d')}). Splits: {head['sizes']} (grouped by caption; ood = test stamps with "
            "Spanish/French captions).\n\n## Heads on frozen pretrained towers (accuracy)\n\n| model | val | test | ood |\n"
            f"|---|---|---|---|\n{heads}\n\n## Compress recipes (latency p50 of the compressed ONNX on ORT)\n\n"
            + "\n".join(lines) + "\n" + reference)


def run(model: Path, data: Path, recipes: list[str], results: Path) -> None:
    out = results / re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-") / "tuxpaint"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for recipe in recipes:
        work = model.parent / f"compress-{Path(recipe).stem}"
        row = compress_once(model, data, recipe, work)
        rows.append(row)
        for name in ("report.md", "report.json"):
            if (work / name).is_file():
                shutil.copyfile(work / name, out / f"{Path(recipe).stem}.{name}")
        print({k: v for k, v in row.items() if k != "report"})
    head = json.loads((model.parent / "head_accuracy.json").read_text())
    write_text(out / "README.md", summary(rows, head))
    print(f"wrote {out / 'README.md'}")
