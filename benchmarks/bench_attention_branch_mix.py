"""ABN's attention mix (1 + m) * g: camfast vs the eager reference."""

from __future__ import annotations

import math

import torch

import camfast

from .layers import layer_cases

# (256, 1024, 14, 14) with m (256, 1, 14, 14) is the authors' ImageNet ResNet at batch 256; the
# CPU runs a smaller batch and the shared CPU target shape.
CPU_SHAPES = [(32, 512, 28, 28), (64, 1024, 14, 14)]
GPU_SHAPES = [(256, 1024, 14, 14), (64, 512, 28, 28)]
QUICK_SHAPES = [(8, 256, 14, 14)]


def _inputs(shape, dtype, device):
    g = torch.randn(shape, device=device).relu().to(dtype).requires_grad_()
    m = torch.rand(shape[0], 1, *shape[2:], device=device).to(dtype).requires_grad_()
    return g, m


def _call(backend, g, m):
    return camfast.attention_branch_mix(g, m, backend=backend)


def _floor_bytes(shape, dtype, mode):
    elem = torch.finfo(dtype).bits // 8
    g, m = math.prod(shape) * elem, shape[0] * shape[2] * shape[3] * elem
    forward = 2 * g + m  # read g and m, write out
    backward = 3 * g + 2 * m  # read grad and g (and m), write grad_g and grad_m
    return {"forward": forward, "backward": backward, "full": forward + backward}[mode]


def cases(device: torch.device, quick: bool):
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    return layer_cases("attention_branch_mix", _call, _inputs, shapes, dtypes, device, _floor_bytes)
