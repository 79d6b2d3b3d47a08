"""ADL: camfast vs the eager reference, each branch forced, at the papers' shapes."""

from __future__ import annotations

import math

import torch

import camfast

from .layers import layer_cases

# (32, 512, 28, 28) is the CPU target shape (VGG16 conv4_3 at batch 32); the rest are
# wsolevaluation's ResNet50 placements (batch 64, with and without the large feature map).
CPU_SHAPES = [(32, 512, 28, 28), (64, 1024, 14, 14)]
GPU_SHAPES = [(64, 1024, 14, 14), (64, 512, 28, 28), (64, 2048, 14, 14), (64, 2048, 28, 28)]
QUICK_SHAPES = [(8, 256, 14, 14)]


def _inputs(shape, dtype, device):
    # ADL sits after a ReLU in every released model.
    return (torch.randn(shape, device=device).relu().to(dtype).requires_grad_(),)


def _caller(use_drop: bool):
    def call(backend, x):
        return camfast.adl(x, use_drop=use_drop, backend=backend)

    return call


def _floor_bytes(use_drop: bool):
    def floor(shape, dtype, mode):
        x = math.prod(shape) * (torch.finfo(dtype).bits // 8)
        # forward reads x, writes out; backward reads grad_out (and x, importance branch), writes grad_x.
        backward = 2 * x if use_drop else 3 * x
        return {"forward": 2 * x, "backward": backward, "full": 2 * x + backward}[mode]

    return floor


def cases(device: torch.device, quick: bool):
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    return [
        case
        for variant, use_drop in (("importance", False), ("drop", True))
        for case in layer_cases("adl", _caller(use_drop), _inputs, shapes, dtypes, device, _floor_bytes(use_drop),
                                variant=variant)
    ]
