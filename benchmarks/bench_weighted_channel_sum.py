"""The gradient CAM methods' raw map: camfast vs the reference and vs the eager expressions the
explainers used before the fused op ("eager": einsum for the weighted sums)."""

from __future__ import annotations

import math

import torch

import camfast
from camfast.reference.weighted_channel_sum import METHODS, WEIGHTED, channel_weights

from .harness import Case
from .layers import backends

# (act [N, K, h, w], classes T or None): BenchNet's layer4 and expand at 8 x 3 x 224 x 224
# (benchmarks/cam_models.py), an early 56 x 56 layer as FullyCAM reduces, and 10 classes per image.
CPU_SHAPES = [((8, 256, 7, 7), None), ((8, 2048, 7, 7), None), ((8, 64, 56, 56), None), ((8, 2048, 7, 7), 10)]
GPU_SHAPES = [((8, 2048, 7, 7), None), ((64, 2048, 7, 7), None), ((64, 256, 56, 56), None), ((8, 2048, 7, 7), 10)]
QUICK_SHAPES = [((2, 32, 7, 7), None)]
QUICK_METHODS = ("grad-cam", "layer-cam")


def eager(act: torch.Tensor, grad: torch.Tensor, method: str) -> torch.Tensor:
    """The expression camfast.cam evaluated per layer before the fused op."""
    if method in WEIGHTED:
        return torch.einsum("...nk,nkhw->...nhw", channel_weights(act, grad, method), act).relu()
    if method == "element-wise":
        return (grad * act).relu_().sum(-3)
    return torch.einsum("...nkhw,nkhw->...nhw", grad.relu() if method == "layer-cam" else grad, act).relu()


def _provider(backend: str, method: str, act, grad):
    if backend == "eager":
        return lambda: eager(act, grad, method)
    return lambda: camfast.weighted_channel_sum(act, grad, method, backend=backend)


def _label(act_shape, classes) -> str:
    return ("" if classes is None else f"{classes}x") + "x".join(map(str, act_shape))


def cases(device: torch.device, quick: bool):
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    out = []
    for act_shape, classes in shapes:
        for dtype in dtypes:
            act = torch.randn(act_shape, device=device).relu().to(dtype)  # post-ReLU maps
            grad_shape = act_shape if classes is None else (classes, *act_shape)
            grad = (1e-3 * torch.randn(grad_shape, device=device)).to(dtype)
            elem = torch.finfo(dtype).bits // 8
            out_elems = (classes or 1) * act_shape[0] * math.prod(act_shape[2:])
            for method in QUICK_METHODS if quick else METHODS:
                out.append(Case(
                    op=f"weighted_channel_sum[{method}]",
                    mode="forward",
                    shape=_label(act_shape, classes),
                    dtype=str(dtype).removeprefix("torch."),
                    providers={b: _provider(b, method, act, grad) for b in [*backends(device), "eager"]},
                    # act and grad read once, the map written once
                    floor_bytes=(act.numel() + grad.numel() + out_elems) * elem,
                ))
    return out
