"""The reference model for the built-in demo: image CNN + log-mel CNN + text transformer, fused."""
from __future__ import annotations

import torch

from edgemm.data import preprocess as pp
from edgemm.data.sources import digits
from edgemm.models.fusion import FusionClassifier
from edgemm.models.towers import AudioCNN, ImageCNN, TextTransformer
from edgemm.spec import AxisRange, InputSpec, ModelSpec, OutputSpec, TaskSpec

MODALITIES = ("image", "audio", "text")


def demo_spec(modalities: tuple[str, ...] = MODALITIES, name: str = "demo-fusion") -> ModelSpec:
    inputs = {
        "image": InputSpec(name="image", modality="image", dtype="float32", shape=("batch", 1, pp.IMAGE_SIZE, pp.IMAGE_SIZE),
                           value_range=(0.0, 1.0), description="grey image in [0, 1], zeros when the camera is off"),
        "audio": InputSpec(name="audio", modality="audio", dtype="float32", shape=("batch", pp.N_MELS, "time"),
                           value_range=(-3.0, 6.0), description=f"normalised log-mel, 8 kHz, hop {pp.HOP} samples"),
        "text": InputSpec(name="text", modality="text", dtype="int64", shape=("batch", "seq"),
                          vocab_size=digits.TOKENIZER.vocab_size, pad_id=digits.TOKENIZER.PAD,
                          description="word ids, 0 = padding; all padding when there is no text"),
    }
    axes = {"batch": AxisRange(min=1, opt=16, max=256), "time": AxisRange(min=16, opt=digits.TIME_FRAMES, max=400),
            "seq": AxisRange(min=1, opt=digits.TEXT_LEN, max=64)}
    used = [inputs[m] for m in modalities]
    return ModelSpec(
        name=name, inputs=tuple(used),
        outputs=(OutputSpec(name="logits", shape=("batch", 10), description="class scores for digits 0-9"),),
        task=TaskSpec(kind="classification", output="logits", num_classes=10,
                      labels=tuple(str(d) for d in range(10))),
        axes={k: v for k, v in axes.items() if any(k in i.shape for i in used)},
        dataset=digits.NAME,
    )


def demo_fusion(modalities: tuple[str, ...] | list[str] = MODALITIES, dim: int = 128, width: float = 1.0,
                seed: int = 0):
    """Build the demo model (random init) and its spec; one modality gives a unimodal baseline."""
    modalities = tuple(modalities)
    unknown = set(modalities) - set(MODALITIES)
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
    scale = lambda ws: tuple(max(8, int(w * width)) for w in ws)  # noqa: E731
    builders = {
        "image": lambda: ImageCNN(1, scale((16, 32, 64)), dim),
        "audio": lambda: AudioCNN(pp.N_MELS, scale((64, 128, 128)), dim),
        "text": lambda: TextTransformer(digits.TOKENIZER.vocab_size, dim, depth=2, num_heads=4),
    }
    with torch.random.fork_rng():  # deterministic initial weights, without touching the caller's RNG
        torch.manual_seed(seed)
        model = FusionClassifier({m: builders[m]() for m in modalities}, dim, num_classes=10)
    name = "demo-fusion" if len(modalities) > 1 else f"demo-{modalities[0]}-only"
    return model, demo_spec(modalities, name)
