"""Memory layout rules every compiled backend follows, mirrored from csrc/common/layout.h.

An [N, C, H, W] tensor is read as [N, C, P] with P = H * W. Its H and W must merge into one
strided axis (true for NCHW, channels_last and channel- or batch-sliced tensors); otherwise it is
copied to contiguous first. Outputs shaped like the input are channels_last exactly when the
channels are the innermost axis of the input, else contiguous. Fake kernels and Triton wrappers
use these helpers so that every backend returns the same strides.
"""

from __future__ import annotations

import torch


def spatial_axes_merge(x: torch.Tensor) -> bool:
    """Whether the last two (spatial) axes merge into one strided axis."""
    return x.shape[-2] == 1 or x.shape[-1] == 1 or x.stride(-2) == x.stride(-1) * x.shape[-1]


def with_mergeable_hw(x: torch.Tensor) -> torch.Tensor:
    return x if spatial_axes_merge(x) else x.contiguous()


def ncp_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """(stride of N, stride of C, stride of the flattened H*W axis) of a mergeable x [..., N, C, H, W]."""
    s_p = x.stride(-1) if x.shape[-1] != 1 else x.stride(-2)
    return x.stride(-4), x.stride(-3), s_p


def channels_inner(x: torch.Tensor) -> bool:
    """Whether kernels see channels as the innermost axis of x."""
    if not spatial_axes_merge(x):
        return False
    _, s_c, s_p = ncp_strides(x)
    return s_c == 1 and x.shape[2] * x.shape[3] > 1 and s_p != 1


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if channels_inner(x) else torch.contiguous_format


def empty_nchw_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty_like(x, dtype=dtype or x.dtype, memory_format=output_memory_format(x))
