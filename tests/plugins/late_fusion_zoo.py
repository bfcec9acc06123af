"""A zoo model in one file: late fusion of the demo's towers (each tower classifies on its own,
the fused prediction is the average of their logits)."""
from __future__ import annotations

import torch
from torch import nn

from edgemm.models.demo import demo_fusion
from edgemm.models.registry import ZOO, ZooEntry


class LateFusion(nn.Module):
    def __init__(self, towers: nn.ModuleDict, dim: int, num_classes: int):
        super().__init__()
        self.towers = towers
        self.heads = nn.ModuleDict({name: nn.Linear(dim, num_classes) for name in towers})

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        logits = [self.heads[name](tower(x)) for (name, tower), x in zip(self.towers.items(), inputs)]
        return torch.stack(logits).mean(dim=0)


def late_fusion(dim: int = 128):
    mid, spec = demo_fusion(dim=dim)
    return LateFusion(mid.towers, dim, 10), spec.model_copy(update={"name": "demo-late-fusion"})


ZOO.register(ZooEntry("demo-late-fusion", f"{__name__}:late_fusion", {}, "demo towers, late fusion (test-only)"))
