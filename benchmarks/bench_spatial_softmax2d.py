"""Spatial softmax and soft-argmax: camfast vs the eager reference.

Shapes: (32, 512, 28, 28) is the CPU target; the rest are sizes from robotics (robomimic keypoints
after a 1x1 conv, visuomotor-style 109x109 maps) and keypoint heatmaps.
"""

from __future__ import annotations

import math

import torch

import camfast

from .layers import layer_cases

CPU_SHAPES = [(32, 512, 28, 28), (16, 32, 109, 109), (64, 32, 3, 3)]
GPU_SHAPES = [(32, 512, 28, 28), (256, 32, 109, 109), (64, 17, 64, 64), (1024, 32, 3, 3)]
QUICK_SHAPES = [(8, 64, 14, 14)]


def _inputs(shape, dtype, device):
    return (torch.randn(shape, device=device).to(dtype).requires_grad_(),)


def _softmax(backend, x):
    return camfast.spatial_softmax2d(x, 1.0, backend=backend)


def _soft_argmax(backend, x):
    return camfast.spatial_soft_argmax2d(x, 1.0, backend=backend)


def _elem(dtype):
    return torch.finfo(dtype).bits // 8


def _softmax_floor(shape, dtype, mode):
    """forward reads x, writes p; backward reads x and grad, writes grad_x (row stats are noise)."""
    x = math.prod(shape) * _elem(dtype)
    return {"forward": 2 * x, "backward": 3 * x, "full": 5 * x}[mode]


def _soft_argmax_floor(shape, dtype, mode):
    """forward reads x; backward reads x and writes grad_x (the [N, C, 2] tensors are noise)."""
    x = math.prod(shape) * _elem(dtype)
    return {"forward": x, "backward": 2 * x, "full": 3 * x}[mode]


def cases(device: torch.device, quick: bool):
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    return [
        *layer_cases("spatial_softmax2d", _softmax, _inputs, shapes, dtypes, device, _softmax_floor),
        *layer_cases("spatial_soft_argmax2d", _soft_argmax, _inputs, shapes, dtypes, device, _soft_argmax_floor),
    ]
