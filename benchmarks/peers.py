"""edgemm int8 against the tools a user would try instead, in one bench run on the same model and data.

Peers: ONNX Runtime fp32; ``onnxruntime.quantization.quantize_static`` with default settings; Intel
Neural Compressor (edgemm's `inc-int8` recipe, INC's own tuning loop); NNCF post-training quantization
(``nncf.quantize`` on the ONNX model, PyPI ``nncf``). Every int8 peer calibrates on the same 512 train
samples. If NNCF cannot be imported, the table says so with the error. Needs ``runs/demo`` (``edgemm
demo``); the compress runs are reused when unchanged.

    python benchmarks/peers.py [--run-dir runs/demo] [--out benchmarks/results/amd-epyc]
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import onnx

from edgemm.api import bench, compress
from edgemm.artifacts import write_text
from edgemm.bench.latency import TimingSettings
from edgemm.bench.report import to_markdown
from edgemm.compress.calibration import calibration_feeds
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--work", type=Path, default=Path("runs/peers"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    ours = compress(str(args.run_dir), "int8", Path("runs/peers-int8"), log=print)
    inc = compress(str(args.run_dir), "inc-int8", Path("runs/peers-inc"), log=print)
    fp32 = Path("runs/peers-int8/01-export/model.onnx")  # the model's validated fp32 export
    spec = resolve_model(str(fp32)).spec
    args.work.mkdir(parents=True, exist_ok=True)
    feeds = calibration_feeds(spec, spec.dataset, "train", 512)
    plain = plain_quantize_static(fp32, args.work / "plain_defaults.onnx", feeds)
    nncf_path, nncf_note = nncf_quantize(fp32, args.work / "nncf.onnx", feeds)
    artifacts = {"ORT fp32": fp32, "quantize_static defaults": plain, "INC (inc-int8 recipe)": inc.final,
                 "edgemm int8 (recipe int8)": ours.final}
    if nncf_path is not None:
        artifacts["NNCF quantize (defaults)"] = nncf_path
    for label, path in list(artifacts.items()):  # one folder: names in the report stay short
        copy = args.work / f"{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}.onnx"
        if path != copy:
            shutil.copy(path, copy)
        artifacts[label] = copy
    report, _ = bench([str(p) for p in artifacts.values()], batch_sizes=(1, 16), threads=1, splits=("test", "ood"),
                      labels=list(artifacts), timing=TimingSettings(warmup=20, min_iterations=150, min_seconds=3.0,
                                                                    rounds=3))
    markdown = to_markdown(report, title="edgemm int8 vs the peers (demo model)") + f"\n- NNCF: {nncf_note}\n"
    out = args.out or RESULTS / re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    write_text(out / "peers.json", report.to_json())
    write_text(out / "peers.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
