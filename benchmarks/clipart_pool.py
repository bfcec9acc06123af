"""Unlabelled images for the real-model benchmark: the Open Clip Art Library (Debian ``openclipart-png``, public
domain, ~8,100 PNGs; fetched at set-up into a cache, never committed) as a data folder with no label column,
for ``distill.unlabelled_split: pool``. Many Tux Paint stamps were drawn from the same library, so an image
whose 16x16 average hash is within 24 bits of a val, test or ood stamp is left out (no held-out stamp leaks
into distillation).

    python benchmarks/clipart_pool.py [--cache ~/.cache/edgemm/openclipart] [--stamps ~/.cache/edgemm/tuxpaint/data]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))

from benchmarks.tuxpaint import CACHE as STAMPS_CACHE, fetch  # noqa: E402

PACKAGE = "openclipart-png"
CACHE = Path.home() / ".cache" / "edgemm" / "openclipart"
MAX_PIXELS = 50_000_000  # a few posters are 230 MP: Pillow refuses them as decompression bombs
NEAR = 24  # bits of 256 in which two average hashes count as the same picture


def average_hash(path: Path) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415
    with Image.open(path) as image:
        image.draft("RGB", (64, 64))  # JPEG-style shrink on load where the codec can
        rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    grey = np.asarray(Image.alpha_composite(white, rgba).convert("L").resize((16, 16), Image.BILINEAR), np.float32)
    return (grey > grey.mean()).ravel()


def held_out_hashes(stamps: Path) -> np.ndarray:
    with open(stamps / "metadata.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] != "train"]
    if not rows:
        raise SystemExit(f"{stamps}/metadata.csv has no held-out rows to keep out of the pool")
    return np.array([average_hash(stamps / r["file_name"]) for r in rows])


def build_pool(clipart: Path, stamps: Path, out: Path) -> tuple[int, int]:
    """out/metadata.csv (file_name, text empty, split pool) linking to the clip art; returns (kept, left out)."""
    from PIL import Image  # noqa: PLC0415
    Image.MAX_IMAGE_PIXELS = None  # sizes are read, and the largest left out, before any pixel is decoded
    held = held_out_hashes(stamps)
    (out / "images").mkdir(parents=True, exist_ok=True)
    kept, dropped = [], 0
    for path in sorted(clipart.rglob("*.png")):
        with Image.open(path) as image:
            if image.size[0] * image.size[1] > MAX_PIXELS:
                dropped += 1
                continue
        if (held != average_hash(path)).sum(axis=1).min() <= NEAR:
            dropped += 1
            continue
        name = "images/" + "__".join(path.relative_to(clipart).parts)
        link = out / name
        if link.is_symlink() or link.exists():  # a link left by an earlier build (perhaps to a moved cache)
            link.unlink()
        link.symlink_to(path)
        kept.append(name)
    tmp = out / "metadata.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text", "split"])  # no label column: every row is unlabelled
        writer.writerows([name, "", "pool"] for name in kept)
    tmp.replace(out / "metadata.csv")
    return len(kept), dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--stamps", type=Path, default=STAMPS_CACHE / "data", help="the Tux Paint data folder")
    args = parser.parse_args()
    if not (args.stamps / "metadata.csv").is_file():
        raise SystemExit(f"no Tux Paint data folder at {args.stamps}: run `python benchmarks/tuxpaint.py data` first")
    clipart = fetch(args.cache, PACKAGE, "usr/share/openclipart/png")
    kept, dropped = build_pool(clipart, args.stamps, args.cache / "data")
    print(f"data folder: {args.cache / 'data'} ({kept} images, split 'pool'; {dropped} left out: near-duplicates "
          f"of held-out stamps or over {MAX_PIXELS // 1_000_000} MP)")


if __name__ == "__main__":
    main()
