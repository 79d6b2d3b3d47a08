"""TAP: camfast vs the eager reference at the paper's shapes (scaled down on CPU)."""

from __future__ import annotations

import math

import torch

import camfast

from .layers import layer_cases

# (32, 512, 28, 28) is the CPU target shape; the rest are the paper's (rethinkingCAM VGG16 at
# batch 40; wsolevaluation ResNet50 with and without the large feature map).
CPU_SHAPES = [(32, 512, 28, 28), (40, 1024, 14, 14), (16, 2048, 28, 28)]
GPU_SHAPES = [(40, 1024, 14, 14), (64, 1024, 28, 28), (64, 2048, 14, 14), (64, 2048, 28, 28)]
QUICK_SHAPES = [(8, 256, 14, 14)]


def _inputs(shape, dtype, device):
    # TAP sits after a ReLU in every released model.
    return (torch.randn(shape, device=device).relu().to(dtype).requires_grad_(),)


def _call(backend, x):
    return camfast.thresholded_avg_pool2d(x, 0.1, backend=backend)


def _floor_bytes(shape, dtype, mode):
    elem = torch.finfo(dtype).bits // 8
    x, pooled = math.prod(shape) * elem, shape[0] * shape[1] * elem
    return {"forward": x + pooled, "backward": 2 * x + pooled, "full": 3 * x + 2 * pooled}[mode]


def cases(device: torch.device, quick: bool):
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    return layer_cases("thresholded_avg_pool2d", _call, _inputs, shapes, dtypes, device, _floor_bytes)
