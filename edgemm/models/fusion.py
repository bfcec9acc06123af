"""Feature-level (mid) fusion: towers -> concatenated embeddings -> MLP head."""
from __future__ import annotations

import torch
from torch import nn


class FusionClassifier(nn.Module):
    """One tower per input, fused by concatenation. With one tower it is a unimodal baseline.

    ``forward`` takes the inputs as keyword arguments named like the towers,
    in the order the spec lists them.
    """

    def __init__(self, towers: dict[str, nn.Module], dim: int, num_classes: int, hidden: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        self.towers = nn.ModuleDict(towers)
        self.head = nn.Sequential(
            nn.Linear(dim * len(towers), hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.towers.keys(), args)) | kwargs
        return self.head(torch.cat([tower(inputs[name]) for name, tower in self.towers.items()], dim=1))
