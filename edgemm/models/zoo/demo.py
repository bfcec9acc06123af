"""The demo model (image CNN + log-mel CNN + text transformer, mid fusion) and its unimodal baselines."""
from __future__ import annotations

from edgemm.models.registry import ZOO, ZooEntry

FACTORY = "edgemm.models.demo:demo_fusion"

ZOO.register(ZooEntry("demo-fusion", FACTORY, {},
                      "image CNN + log-mel CNN + text transformer, mid fusion (the demo model)"))
for modality in ("image", "audio", "text"):
    ZOO.register(ZooEntry(f"demo-{modality}-only", FACTORY, {"modalities": [modality]}, f"{modality} baseline"))
