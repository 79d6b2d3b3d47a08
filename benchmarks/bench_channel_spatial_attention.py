"""GGAM channel-spatial attention: camfast vs the eager reference, sigmoid and softmax."""

from __future__ import annotations

import math

import torch

import camfast

from .layers import layer_cases

# (32, 512, 28, 28) is the CPU target shape; (32, 2048, 14, 14) is the authors' (ResNet50 at 448 px,
# batch 32, cars_sp_CAM.py).
CPU_SHAPES = [(32, 512, 28, 28), (32, 2048, 14, 14)]
GPU_SHAPES = [(32, 2048, 14, 14), (64, 1024, 28, 28), (64, 2048, 28, 28)]
QUICK_SHAPES = [(8, 256, 14, 14)]


def _inputs(shape, dtype, device):
    # a follows ResNet's final ReLU; s is a softmax over channels, as the module makes it.
    a = torch.randn(shape, device=device).relu().to(dtype).requires_grad_()
    s = torch.softmax(torch.randn(shape[:2], device=device), dim=1).to(dtype).requires_grad_()
    return a, s


def _call(spatial):
    return lambda backend, a, s: camfast.channel_spatial_attention(a, s, spatial, backend=backend)


def _floor_bytes(shape, dtype, mode):
    elem = torch.finfo(dtype).bits // 8
    a, s = math.prod(shape) * elem, shape[0] * shape[1] * elem
    t = shape[0] * shape[2] * shape[3] * 4
    forward = 2 * a + s + t  # read a, write out (and the small s and t)
    backward = 3 * a + 2 * s + t  # read grad and a, write grad_a
    return {"forward": forward, "backward": backward, "full": forward + backward}[mode]


def cases(device: torch.device, quick: bool):
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    return [
        case
        for spatial in ("sigmoid", "softmax")
        for case in layer_cases("channel_spatial_attention", _call(spatial), _inputs, shapes, dtypes, device,
                                _floor_bytes, variant=spatial)
    ]
