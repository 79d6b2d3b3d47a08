"""Score-CAM masked inputs: camfast vs the eager reference, chunked the way the explainer calls it."""

from __future__ import annotations

import math

import torch

import camfast

from .harness import Case
from .layers import backends

# (act [N, K, h, w], image size, channels per call): ResNet-50's last layer (2048 x 7 x 7) and VGG16's
# last conv layers (512 x 14 x 14 and 7 x 7) on 224 x 224 images, with the chunk bounding the masks
# held at once.
GPU_SHAPES = [((1, 2048, 7, 7), 224, 256), ((1, 512, 14, 14), 224, 128), ((8, 512, 7, 7), 224, 256)]
CPU_SHAPES = [((1, 512, 7, 7), 224, 64), ((1, 512, 14, 14), 224, 64)]
QUICK_SHAPES = [((1, 32, 7, 7), 64, 16)]


def _provider(backend, act, image, chunk):
    def run():
        with torch.no_grad():
            for k in range(0, act.shape[1], chunk):
                camfast.score_cam_masks(act[:, k : k + chunk], image, backend=backend)

    return run


def _floor_bytes(act_shape, size, dtype):
    """The masks written once, the image and the maps read once."""
    n, k = act_shape[:2]
    elem = torch.finfo(dtype).bits // 8
    return (n * k * 3 * size * size + n * 3 * size * size + math.prod(act_shape)) * elem


def cases(device: torch.device, quick: bool):
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    out = []
    for act_shape, size, chunk in shapes:
        for dtype in dtypes:
            act = torch.randn(act_shape, device=device).relu().to(dtype)  # post-ReLU maps
            image = torch.randn(act_shape[0], 3, size, size, device=device).to(dtype)
            out.append(Case(
                op="score_cam_masks",
                mode="forward",
                shape="x".join(map(str, act_shape)) + f"->{size}x{size}/chunk{chunk}",
                dtype=str(dtype).removeprefix("torch."),
                providers={b: _provider(b, act, image, chunk) for b in backends(device)},
                floor_bytes=_floor_bytes(act_shape, size, dtype),
            ))
    return out
