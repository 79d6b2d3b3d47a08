"""ABN's attention mix (1 + m) * g in Triton: one program per (sample, block of pixels), looping
over the channels, so m is loaded once per pixel and the backward's sum over channels needs no
second pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_nchw_like, ncp_strides, with_mergeable_hw
from .._registrations import (
    check_attention_branch_mix,
    check_attention_branch_mix_backward,
    register_attention_branch_mix,
)
from ._utils import SUM, acc_dtype, pixel_tiles, tile_sum


@triton.jit
def _mix_kernel(in_ptr, in_stride_n, in_stride_c, in_stride_p, m_ptr, m_stride_n, m_stride_p,
                out_ptr, out_stride_n, out_stride_c, out_stride_p,
                features_ptr, features_stride_n, features_stride_c, features_stride_p, grad_m_ptr, C, P,
                BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out = (1 + m) in; BACKWARD (in the incoming gradient): also grad_m = sum_c in features."""
    n = tl.program_id(0).to(tl.int64)
    ps = (tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    p_ok = ps < P
    gain = 1.0 + tl.load(m_ptr + n * m_stride_n + ps * m_stride_p, mask=p_ok, other=0.0).to(ACC)
    in_pixels = in_ptr + n * in_stride_n + ps[None, :] * in_stride_p
    out_pixels = out_ptr + n * out_stride_n + ps[None, :] * out_stride_p
    features_pixels = features_ptr + n * features_stride_n + ps[None, :] * features_stride_p
    total = tl.zeros([BLOCK_P], SUM)
    for c0 in range(0, C, BLOCK_C):
        cs = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        ok = (cs < C)[:, None] & p_ok[None, :]
        x = tl.load(in_pixels + cs[:, None] * in_stride_c, mask=ok, other=0.0).to(ACC)
        tl.store(out_pixels + cs[:, None] * out_stride_c, gain[None, :] * x, mask=ok)
        if BACKWARD:
            features = tl.load(features_pixels + cs[:, None] * features_stride_c, mask=ok, other=0.0).to(ACC)
            total += tile_sum(x * features, 0)
    if BACKWARD:
        tl.store(grad_m_ptr + n * P + ps, total.to(ACC), mask=p_ok)


def _launch(inp, m, out, features=None, grad_m=None):
    """out = (1 + m) inp; with features and grad_m also grad_m = sum_c inp features."""
    block_c, block_p = pixel_tiles(inp)
    n, c = inp.shape[:2]
    p = inp.shape[2] * inp.shape[3]
    m_strides = ncp_strides(m)
    backward = features is not None
    _mix_kernel[(n, triton.cdiv(p, block_p))](
        inp, *ncp_strides(inp), m, m_strides[0], m_strides[2], out, *ncp_strides(out),
        features if backward else inp, *ncp_strides(features if backward else inp), grad_m if backward else out, c, p,
        BACKWARD=backward, ACC=acc_dtype(inp.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
    )


# g (the schema's name, the paper's g(x)) is the features.
@torch.library.custom_op("camfast::attention_branch_mix_triton", mutates_args=())
def attention_branch_mix_triton(g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    check_attention_branch_mix("camfast::attention_branch_mix_triton", g, m)
    features, m = with_mergeable_hw(g), with_mergeable_hw(m)
    out = empty_nchw_like(features)
    if features.numel():
        _launch(features, m, out)
    return out


@torch.library.custom_op("camfast::_attention_branch_mix_backward_triton", mutates_args=())
def attention_branch_mix_backward_triton(
    grad_out: torch.Tensor, g: torch.Tensor, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    check_attention_branch_mix_backward("camfast::_attention_branch_mix_backward_triton", grad_out, g, m)
    grad_out, features, m = with_mergeable_hw(grad_out), with_mergeable_hw(g), with_mergeable_hw(m)
    grad_features, grad_m = empty_nchw_like(features), m.new_empty(m.shape)
    if features.shape[0] * features.shape[2] * features.shape[3]:
        # The pass runs over grad_out's pixels; grad_features follows the features' layout, as the
        # fake kernel says.
        _launch(grad_out, m, grad_features, features, grad_m)
    return grad_features, grad_m


register_attention_branch_mix("_triton")
