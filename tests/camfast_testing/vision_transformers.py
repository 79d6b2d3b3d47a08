"""A small vision transformer and a small Swin-like model for the explainer tests (random weights).

TinyViT: patch embedding, a CLS token, pre-norm blocks (multi-head self-attention, GELU MLP),
classification from the CLS token; block outputs are [N, 1 + h w, D] tokens.
TinySwin: a patch embedding to channels-last [N, h, w, C] tokens (torchvision's Swin layout),
blocks with (shifted) window attention, patch merging between two stages, classification from
the mean token; block outputs and their norm2 are [N, h, w, C].
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention on [B, L, D] written out (timm's form). nn.MultiheadAttention would
    switch to a fused kernel when no input requires grad, and change the numbers slightly between
    an explainer's passes and a peer's."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block on [N, L, D] tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, image: int = 32, patch: int = 8, dim: int = 32, depth: int = 2, heads: int = 4,
                 classes: int = 10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 1 + (image // patch) ** 2, dim) * 0.5)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():
            self.head.weight.mul_(5)
        self.eval()

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class SwinBlock(Block):
    """Window attention on [N, h, w, C] tokens, windows shifted by half a window when `shift`
    (Block's layers, Swin's forward)."""

    def __init__(self, dim: int, heads: int, window: int, shift: bool):
        super().__init__(dim, heads)
        self.window, self.shift = window, shift

    def forward(self, x):
        n, h, w, c = x.shape
        s, step = self.window, self.window // 2 if self.shift else 0
        y = torch.roll(self.norm1(x), (-step, -step), (1, 2))
        y = y.view(n, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        y = self.attn(y)
        y = y.view(n, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
        x = x + torch.roll(y, (step, step), (1, 2))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class TinySwin(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2, window: int = 2, classes: int = 10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.stage1 = nn.Sequential(SwinBlock(dim, heads, window, False), SwinBlock(dim, heads, window, True))
        self.merge = PatchMerging(dim)
        self.stage2 = nn.Sequential(SwinBlock(2 * dim, heads, window, False), SwinBlock(2 * dim, heads, window, True))
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, classes)
        with torch.no_grad():
            self.head.weight.mul_(5)
        self.eval()

    def forward(self, x):
        tokens = self.patch(x).permute(0, 2, 3, 1)
        tokens = self.stage2(self.merge(self.stage1(tokens)))
        return self.head(self.norm(tokens).mean((1, 2)))
