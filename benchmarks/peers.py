"""edgemm int8 against the tools a user would try instead, in one bench run on the same model and data.

Peers, all post-training int8 on the same model: ONNX Runtime fp32;
``onnxruntime.quantization.quantize_static`` with default settings; Intel Neural Compressor (a
quantize-only `backend: inc` recipe: INC's static int8 and its own tuning loop under the same gate);
NNCF post-training quantization (``nncf.quantize`` on the ONNX model, PyPI ``nncf``). Every int8 peer
calibrates on the same train samples. A peer that cannot run is listed with its error. The compress
runs are reused when unchanged.

    python benchmarks/peers.py [--run-dir runs/demo] [--out benchmarks/results/amd-epyc]
    python benchmarks/peers.py --run-dir runs/tuxpaint/model --recipe int8-per-tower --name tuxpaint --trust-code
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import onnx

from edgemm.api import bench, compress
from edgemm.errors import EdgemmError
from edgemm.trust import trust_everything
from edgemm.artifacts import write_text
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.compress.calibration import calibration_feeds
from edgemm.compress.recipe import load_recipe
from edgemm.environment import cpu_model
from edgemm.export.targets.onnx import save_onnx
from edgemm.models.registry import resolve_model

from compare_int8 import plain_quantize_static  # noqa: E402 - the same "defaults" peer as compare_int8.py

RESULTS = Path(__file__).parent / "results"


def nncf_quantize(fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[Path | None, str]:
    """NNCF's post-training quantization of the ONNX graph (its defaults), or why it could not run."""
    try:
        import nncf
    except Exception as err:  # noqa: BLE001 - reported in the table, whatever it is
        return None, f"nncf not importable: {type(err).__name__}: {err}"
    samples = sum(len(next(iter(f.values()))) for f in feeds)
    dataset = nncf.Dataset(feeds)  # each item is already an ONNX Runtime feed
    quantized = nncf.quantize(onnx.load(str(fp32)), dataset, subset_size=samples)
    onnx.save(quantized, str(out))
    return save_onnx(onnx.load(str(out)), resolve_model(str(fp32)).spec, out), f"nncf {nncf.__version__}"


INC_PTQ = """name: inc-ptq
description: INC static int8 (post-training, its autotune under the gate), no pruning.
target: x86-cpu
gates: {split: val, max_accuracy_drop: %s}
stages:
  - {stage: quantize, backend: inc, calibration_samples: %d}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--recipe", default="int8", help="edgemm's recipe (demo: int8; a text tower: int8-per-tower)")
    parser.add_argument("--name", default="demo", help="folder suffix under runs/ and the report title")
    parser.add_argument("--samples", type=int, default=512, help="calibration samples for every int8 peer")
    parser.add_argument("--trust-code", action="store_true", help="the run directory names a factory (code)")
    parser.add_argument("--max-accuracy-drop", type=float, default=None,
                        help="the gate of edgemm's and INC's runs, in points (default: the recipe's); a small gate "
                             "split needs two samples' worth (compress warns)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(f"runs/peers-{args.name}")
    work.mkdir(parents=True, exist_ok=True)
    trust_everything(args.trust_code)
    recipe = load_recipe(args.recipe)
    if args.max_accuracy_drop is not None:
        recipe = recipe.model_copy(update={"gates": recipe.gates.model_copy(
            update={"max_accuracy_drop": args.max_accuracy_drop})})
    ours = compress(str(args.run_dir), recipe, work / "edgemm", log=print)
    fp32 = work / "edgemm" / "01-export" / "model.onnx"  # the model's validated fp32 export
    spec = resolve_model(str(fp32)).spec
    feeds = calibration_feeds(spec, spec.dataset, "train", args.samples)
    notes, artifacts = [], {"ORT fp32": fp32,
                            "quantize_static defaults": plain_quantize_static(fp32, work / "plain.onnx", feeds)}
    write_text(work / "inc-ptq.yaml", INC_PTQ % (recipe.gates.max_accuracy_drop, args.samples))
    try:
        artifacts["INC PTQ (autotune)"] = compress(str(args.run_dir), str(work / "inc-ptq.yaml"), work / "inc",
                                                   log=print).final
    except EdgemmError as err:  # INC's tuning can miss the gate or fail on the model: the table says so
        notes.append(f"INC PTQ: did not produce a model: {err}")
    gate = f", gate {args.max_accuracy_drop:g} pts" if args.max_accuracy_drop is not None else ""
    artifacts[f"edgemm int8 (recipe {args.recipe}{gate})"] = ours.final
    nncf_path, nncf_note = nncf_quantize(fp32, work / "nncf.onnx", feeds)
    notes.append(f"NNCF: {nncf_note}")
    if nncf_path is not None:
        artifacts["NNCF quantize (defaults)"] = nncf_path
    for label, path in list(artifacts.items()):  # one folder: names in the report stay short
        copy = work / f"{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}.onnx"
        if path != copy:
            shutil.copy(path, copy)
        artifacts[label] = copy
    report, _ = bench([str(p) for p in artifacts.values()], batch_sizes=(1, 16), threads=1, splits=("test", "ood"),
                      labels=list(artifacts), profile=True,
                      timing=TimingSettings(warmup=20, min_iterations=150, min_seconds=3.0, rounds=3))
    markdown = (to_markdown(report, title=f"edgemm int8 vs the peers ({args.name} model)")
                + "".join(f"- {note}\n" for note in notes))
    out = args.out or RESULTS / re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    write_text(out / f"peers-{args.name}.json", report.to_json())
    write_text(out / f"peers-{args.name}.md", markdown)
    print(markdown)

if __name__ == "__main__":
    main()
