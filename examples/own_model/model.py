"""A user's own model and data, as README's "Compress your own model" describes them.

Two towers: a small CNN over RGB images and a BERT encoder (Hugging Face ``BertModel``, tiny random
config) over a Hugging Face tokenizer's ``input_ids`` + ``attention_mask`` (one tower, two inputs),
mean-pooled under the mask, concatenated, classified. The data is a folder in the Hugging Face
imagefolder layout: PNGs plus ``metadata.csv`` with ``file_name,text,label,split``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgemm.spec import AxisRange, ImageFrom, InputSpec, ModelSpec, OutputSpec, TaskSpec, TokenizerFrom

TOKENIZER = str(Path(__file__).parent / "tokenizer")
CLASSES = ("red", "green", "blue")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220)}
SIZE = 32


class OwnModel(nn.Module):
    def __init__(self, vocab_size: int = 31, dim: int = 32, heads: int = 4):
        super().__init__()
        from transformers import BertConfig, BertModel
        self.vision = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, dim))
        self.bert = BertModel(BertConfig(vocab_size=vocab_size, hidden_size=dim, num_hidden_layers=2,
                                         num_attention_heads=heads, intermediate_size=2 * dim,
                                         max_position_embeddings=64), add_pooling_layer=False)
        self.classifier = nn.Sequential(nn.Linear(2 * dim, 32), nn.ReLU(), nn.Linear(32, len(CLASSES)))

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        text = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(torch.cat([self.vision(pixel_values), text], dim=1))


def own_spec() -> ModelSpec:
    text = dict(modality="text", dtype="int64", shape=("batch", "seq"), tower="text")
    return ModelSpec(
        name="own-two-tower",
        inputs=(InputSpec(name="pixel_values", modality="image", dtype="float32", shape=("batch", 3, SIZE, SIZE),
                          preprocess=ImageFrom(column="image", mean=(0.5,) * 3, std=(0.5,) * 3)),
                InputSpec(name="input_ids", vocab_size=31, pad_id=0, **text,
                          preprocess=TokenizerFrom(column="text", tokenizer=TOKENIZER)),
                InputSpec(name="attention_mask", value_range=(0, 1), **text,
                          preprocess=TokenizerFrom(column="text", tokenizer=TOKENIZER, field="attention_mask"))),
        outputs=(OutputSpec(name="logits", shape=("batch", len(CLASSES))),),
        task=TaskSpec(kind="classification", output="logits", num_classes=len(CLASSES), labels=CLASSES),
        axes={"batch": AxisRange(min=1, opt=8, max=64), "seq": AxisRange(min=2, opt=8, max=32)})


def build(seed: int = 0) -> tuple[OwnModel, ModelSpec]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return OwnModel().eval(), own_spec()


CAPTIONS = ["a {c} square", "a small {c} patch", "a picture of a shape", "a drawing", "a big {c} shape",
            "a photo with a dark shape", "a light {c} colour"]


def rows(n: int, seed: int = 0) -> list[dict]:
    """Image pixels + caption + label + split; the caption names the colour only some of the time."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        image = rng.integers(0, 90, size=(SIZE, SIZE, 3)).astype(np.uint8)
        side = int(rng.integers(8, 20))
        y, x = rng.integers(0, SIZE - side, size=2)
        image[y:y + side, x:x + side] = COLOURS[label]
        split = ("train", "train", "train", "val", "test")[i % 5]
        out.append({"image": image, "text": str(rng.choice(CAPTIONS)).format(c=label), "label": label,
                    "split": split})
    return out


def make_folder(root: str | Path, n: int = 150, seed: int = 0) -> Path:
    """The data folder: images/NNNN.png and metadata.csv (file_name,text,label,split)."""
    from PIL import Image
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file_name", "text", "label", "split"])
        writer.writeheader()
        for i, row in enumerate(rows(n, seed)):
            name = f"images/{i:04d}.png"
            Image.fromarray(row["image"]).save(root / name)
            writer.writerow({"file_name": name, "text": row["text"], "label": row["label"], "split": row["split"]})
    return root
