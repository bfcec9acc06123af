"""The real-model benchmark: EfficientNet-Lite0 + all-MiniLM-L6-v2 (zoo ``effnet-minilm``) on the Tux Paint
stamps (Debian ``tuxpaint-stamps-default``, GPL-2: fetched at set-up into a cache, never committed).

    python benchmarks/tuxpaint.py data   [--cache ~/.cache/edgemm/tuxpaint]   # fetch + build the data folder
    python benchmarks/tuxpaint.py head                                        # train the fusion head -> run dir
    python benchmarks/tuxpaint.py run    [--recipe int8 ...]                  # compress + bench, write results

The data folder is the Hugging Face imagefolder layout edgemm reads for any user: the stamp PNGs and
``metadata.csv`` (file_name, text = English caption, label = category, split). Splits are grouped by
caption (identical captions never cross); ``ood`` holds the test stamps with their caption in Spanish
or French, which the English MiniLM never saw. The head is trained on frozen tower embeddings, with
image-only and caption-only baselines trained the same way. Exits 0 with "skipped: ..." where the
package cannot be fetched (no apt-get, no network).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))

from edgemm.artifacts import write_json  # noqa: E402
from edgemm.models.pretrained import TUXPAINT_CLASSES  # noqa: E402

PACKAGE = "tuxpaint-stamps-default"
CACHE = Path.home() / ".cache" / "edgemm" / "tuxpaint"
OOD_LANGUAGES = ("es", "fr")


def fetch(cache: Path, package: str = PACKAGE, inside: str = "usr/share/tuxpaint/stamps") -> Path:
    """A folder of a Debian package, downloaded once with apt-get and unpacked with dpkg -x."""
    folder = cache / "x" / inside
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise SystemExit(f"skipped: apt-get/dpkg not found; {package} comes from Debian's archive")
    try:
        if not list(cache.glob("*.deb")):
            got = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
            if got.returncode:  # an empty package list: update once, then try again
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
                subprocess.run(["apt-get", "download", package], cwd=cache, check=True, capture_output=True)
        subprocess.run(["dpkg", "-x", str(next(cache.glob("*.deb"))), str(cache / "x")], check=True)
    except (subprocess.CalledProcessError, StopIteration) as err:
        raise SystemExit(f"skipped: could not fetch {package} ({err}); run `apt-get download {package}` by hand")
    return folder


def stamps_table(stamps: Path) -> list[dict]:
    """One row per stamp with a PNG and a caption, in the benchmark's categories."""
    rows = []
    for png in sorted(stamps.rglob("*.png")):
        category = png.relative_to(stamps).parts[0]
        text_file = png.with_suffix(".txt")
        if category not in TUXPAINT_CLASSES or not text_file.is_file():
            continue
        lines = text_file.read_text(errors="replace").splitlines()
        caption = lines[0].strip() if lines else ""
        if not caption:
            continue
        translations = dict(line.split(".utf8=", 1) for line in lines[1:] if ".utf8=" in line)
        rows.append({"png": png, "caption": caption, "label": category,
                     "ood": next((translations[lang].strip() for lang in OOD_LANGUAGES if translations.get(lang)), None)})
    return rows


def split_of(caption: str) -> str:
    """Grouped by caption: identical captions share a split (70 / 15 / 15 by a stable hash)."""
    bucket = int(hashlib.sha1(caption.lower().encode()).hexdigest(), 16) % 100
    return "train" if bucket < 70 else "val" if bucket < 85 else "test"


def build_folder(stamps: Path, out: Path) -> Path:
    if (out / "metadata.csv").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    with open(tmp / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file_name", "text", "label", "split"])
        writer.writeheader()
        for row in stamps_table(stamps):
            name = "images/" + "__".join(row["png"].relative_to(stamps).parts)
            shutil.copyfile(row["png"], tmp / name)
            split = split_of(row["caption"])
            writer.writerow({"file_name": name, "text": row["caption"], "label": row["label"], "split": split})
            if split == "test" and row["ood"]:
                writer.writerow({"file_name": name, "text": row["ood"], "label": row["label"], "split": "ood"})
    tmp.rename(out)  # complete or absent: an interrupted build leaves only *.partial
    return out


# -- the fusion head, trained on frozen tower embeddings ------------------------------------------
def embeddings(model, spec, split) -> tuple[np.ndarray, np.ndarray]:
    import torch
    images, texts = [], []
    with torch.no_grad():
        for inputs, _ in split.batches(32):
            feed = {k: torch.from_numpy(v) for k, v in inputs.items()}
            images.append(model.image(feed["pixel_values"]).numpy())
            tokens = model.text(input_ids=feed["input_ids"], attention_mask=feed["attention_mask"]).last_hidden_state
            mask = feed["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            texts.append(((tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)).numpy())
    return np.concatenate(images), np.concatenate(texts)


def train_head(head, train_x, train_y, val_x, val_y, epochs: int = 300, seed: int = 0) -> float:
    """Full-batch AdamW on embeddings, the epoch with the best val accuracy kept."""
    import torch
    torch.manual_seed(seed)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    optimiser = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    best, best_state = -1.0, None
    for _ in range(epochs):
        head.train()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        head.eval()
        with torch.no_grad():
            acc = float((head(vx).argmax(1) == vy).float().mean())
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return best


def make_head_run(data: Path, out: Path) -> dict:
    """Train the fused head and the single-modality baselines; save the fused model as a run directory."""
    import torch
    from safetensors.torch import save_file

    from edgemm.data.datasets import load_split
    from edgemm.models.pretrained import IMAGE_DIM, TEXT_DIM
    from edgemm.models.registry import resolve_model, save_model

    model = resolve_model("effnet-minilm")
    spec = model.spec
    splits = {s: load_split(str(data), s, spec) for s in ("train", "val", "test", "ood")}
    feats = {s: embeddings(model.module, spec, split) for s, split in splits.items()}
    labels = {s: split.labels for s, split in splits.items()}
    results = {"sizes": {s: len(split) for s, split in splits.items()}}
    variants = {"fused (image + caption)": (lambda f: np.concatenate(f, 1), model.module.head),
                "image only": (lambda f: f[0], torch.nn.Linear(IMAGE_DIM, len(TUXPAINT_CLASSES))),
                "caption only": (lambda f: f[1], torch.nn.Linear(TEXT_DIM, len(TUXPAINT_CLASSES)))}
    for name, (pick, head) in variants.items():
        train_head(head, pick(feats["train"]), labels["train"], pick(feats["val"]), labels["val"])
        with torch.no_grad():
            results[name] = {s: float((head(torch.from_numpy(pick(feats[s]))).argmax(1).numpy() == labels[s]).mean())
                             for s in ("val", "test", "ood")}
    out.mkdir(parents=True, exist_ok=True)
    save_file({f"head.{k}": v.contiguous() for k, v in model.module.head.state_dict().items()}, str(out / "head.safetensors"))
    model.spec = spec.model_copy(update={"trained": True, "dataset": str(data.resolve())})
    save_model(model, out / "model")
    write_json(out / "head_accuracy.json", results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["data", "head", "run"])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "tuxpaint")
    parser.add_argument("--recipe", action="append", default=None)
    args = parser.parse_args()
    data = build_folder(fetch(args.cache), args.cache / "data")
    print(f"data folder: {data}")
    if args.step in ("head", "run") and not (args.work / "model" / "model.json").is_file():
        print(make_head_run(data, args.work))
    if args.step == "run":
        from benchmarks.tuxpaint_run import run  # noqa: PLC0415 - the compress + bench half
        run(args.work / "model", data, args.recipe or ["int8"], ROOT / "benchmarks" / "results")


if __name__ == "__main__":
    main()
