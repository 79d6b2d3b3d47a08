"""ABN's attention mix (1 + m) * g in Triton: one program per (sample, block of pixels), looping
over the channels, so m is loaded once per pixel and the backward's sum over channels needs no
second pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_nchw_like, ncp_strides, with_mergeable_hw
from .._registrations import register_attention_branch_mix
from ._utils import acc_dtype, pixel_tiles


@triton.jit
def _mix_kernel(x_ptr, x_n, x_c, x_p, m_ptr, m_n, m_p, out_ptr, o_n, o_c, o_p, g_ptr, g_n, g_c, g_p, gm_ptr, C, P,
                BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out = (1 + m) x; BACKWARD (x the incoming gradient): also grad_m = sum_c x g."""
    n = tl.program_id(0).to(tl.int64)
    ps = (tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    p_ok = ps < P
    gain = 1.0 + tl.load(m_ptr + n * m_n + ps * m_p, mask=p_ok, other=0.0).to(ACC)
    total = tl.zeros([BLOCK_P], ACC)
    for c0 in range(0, C, BLOCK_C):
        cs = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        ok = (cs < C)[:, None] & p_ok[None, :]
        x = tl.load(x_ptr + n * x_n + cs[:, None] * x_c + ps[None, :] * x_p, mask=ok, other=0.0).to(ACC)
        tl.store(out_ptr + n * o_n + cs[:, None] * o_c + ps[None, :] * o_p, gain[None, :] * x, mask=ok)
        if BACKWARD:
            g = tl.load(g_ptr + n * g_n + cs[:, None] * g_c + ps[None, :] * g_p, mask=ok, other=0.0).to(ACC)
            total += tl.sum(x * g, axis=0)
    if BACKWARD:
        tl.store(gm_ptr + n * P + ps, total, mask=p_ok)


def _launch(x, m, out, g=None, grad_m=None):
    block_c, block_p = pixel_tiles(x)
    n, c = x.shape[:2]
    p = x.shape[2] * x.shape[3]
    m_strides = ncp_strides(m)
    backward = g is not None
    _mix_kernel[(n, triton.cdiv(p, block_p))](
        x, *ncp_strides(x), m, m_strides[0], m_strides[2], out, *ncp_strides(out),
        g if backward else x, *ncp_strides(g if backward else x), grad_m if backward else out, c, p,
        BACKWARD=backward, ACC=acc_dtype(x.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
    )


@torch.library.custom_op("camfast::attention_branch_mix_triton", mutates_args=())
def attention_branch_mix_triton(g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    g, m = with_mergeable_hw(g), with_mergeable_hw(m)
    out = empty_nchw_like(g)
    if g.numel():
        _launch(g, m, out)
    return out


@torch.library.custom_op("camfast::_attention_branch_mix_backward_triton", mutates_args=())
def attention_branch_mix_backward_triton(
    grad_out: torch.Tensor, g: torch.Tensor, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    grad_out, g, m = with_mergeable_hw(grad_out), with_mergeable_hw(g), with_mergeable_hw(m)
    grad_g, grad_m = empty_nchw_like(g), m.new_empty(m.shape)
    if g.shape[0] * g.shape[2] * g.shape[3]:
        # The pass runs over grad_out's pixels; grad_g follows g's layout, as the fake kernel says.
        _launch(grad_out, m, grad_g, g, grad_m)
    return grad_g, grad_m


register_attention_branch_mix("_triton")
