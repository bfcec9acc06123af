"""Encoders, one per modality ("towers"), each mapping its input to a [batch, dim] embedding."""
from __future__ import annotations

import torch
from torch import nn


def _conv_block(c_in: int, c_out: int, conv: type[nn.Module], stride: int = 1) -> nn.Sequential:
    norm = nn.BatchNorm2d if conv is nn.Conv2d else nn.BatchNorm1d
    return nn.Sequential(conv(c_in, c_out, 3, stride=stride, padding=1, bias=False), norm(c_out), nn.ReLU())


class ImageCNN(nn.Module):
    """Small VGG-style CNN for [batch, channels, H, W] images."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128), dim: int = 128):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [_conv_block(c, w, nn.Conv2d), _conv_block(w, w, nn.Conv2d), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c, dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(image).mean(dim=(2, 3)))


class AudioCNN(nn.Module):
    """1-D CNN over a log-mel spectrogram [batch, n_mels, time]; any time length.

    Downsamples with strided convolutions: MaxPool1d makes torch.export
    specialise the time axis to the example length (measured, torch 2.13).
    """

    def __init__(self, n_mels: int = 40, widths: tuple[int, ...] = (64, 128, 128), dim: int = 128):
        super().__init__()
        layers, c = [], n_mels
        for w in widths:
            layers += [_conv_block(c, w, nn.Conv1d), _conv_block(w, w, nn.Conv1d, stride=2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c, dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(audio).amax(dim=2))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (exports cleanly; heads are prunable)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + key_bias
        mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, s, -1)
        return self.out(mixed)


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_bias)
        return x + self.mlp(self.norm2(x))


class TextTransformer(nn.Module):
    """Pre-norm transformer over token ids [batch, seq]; id ``pad_id`` is padding.

    A learned [CLS] vector is prepended and never masked, so an all-padding
    (missing) text still gives a defined embedding.
    """

    def __init__(self, vocab_size: int, dim: int = 128, depth: int = 2, num_heads: int = 4,
                 max_len: int = 64, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len + 1, dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        b, s = text.shape
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(text)], dim=1) + self.pos[:, : s + 1]
        pad = torch.cat([torch.zeros_like(text[:, :1], dtype=torch.bool), text == self.pad_id], dim=1)
        # -1e4 rather than -inf: finite under fp16 and int8 quantisation.
        key_bias = pad[:, None, None, :].to(x.dtype) * -1e4
        for layer in self.layers:
            x = layer(x, key_bias)
        return self.norm(x[:, 0])
