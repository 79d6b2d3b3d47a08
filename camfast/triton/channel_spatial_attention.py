"""GGAM channel-spatial attention in Triton.

Forward: one program per (sample, block of pixels) sums s[c] * a[c, p] over the channels; with the
sigmoid it then writes out = a * t for those pixels while they are in cache. The softmax needs
every z of a sample first, so there a per-sample softmax and a second pixel pass follow.
Backward: the same pixel pass gives r = sum_c g a (and u under the sigmoid), then one program per
(sample, block of channels) writes grad_a and sums grad_s over the pixels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_nchw_like, ncp_strides, with_mergeable_hw
from .._registrations import (
    check_channel_spatial_attention,
    check_channel_spatial_attention_backward,
    register_channel_spatial_attention,
)
from ._utils import SUM, acc_dtype, pixel_tiles, row_tiles, tile_sum

# What the pixel pass does after its channel sums (constexpr, so the kernel compares them by name).
_STORE = tl.constexpr(0)  # keep the sums
_SIGMOID = tl.constexpr(1)  # t = sigmoid(z)
_SIGMOID_GRAD = tl.constexpr(2)  # u = r (1 - t) t


@triton.jit
def _pixel_kernel(x_ptr, x_stride_n, x_stride_c, x_stride_p, y_ptr, y_stride_n, y_stride_c, y_stride_p, map_ptr, t_ptr,
                  out_ptr, out_stride_n, out_stride_c, out_stride_p, C, P,
                  REDUCE: tl.constexpr, EPILOGUE: tl.constexpr, APPLY: tl.constexpr,
                  ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """REDUCE: map[n, p] = sum_c x[c, p] * y[c, p], then the EPILOGUE (sigmoid: t = sigmoid(z);
    sigmoid gradient: u = r (1 - t) t with t read from t_ptr). APPLY: out = x * map."""
    n = tl.program_id(0).to(tl.int64)
    ps = (tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    p_ok = ps < P
    maps = map_ptr + n * P + ps
    x_pixels = x_ptr + n * x_stride_n + ps[None, :] * x_stride_p
    if REDUCE:
        y_pixels = y_ptr + n * y_stride_n + ps[None, :] * y_stride_p
        sums = tl.zeros([BLOCK_P], SUM)
        for c0 in range(0, C, BLOCK_C):
            cs = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
            ok = (cs < C)[:, None] & p_ok[None, :]
            x = tl.load(x_pixels + cs[:, None] * x_stride_c, mask=ok, other=0.0).to(ACC)
            y = tl.load(y_pixels + cs[:, None] * y_stride_c, mask=ok, other=0.0).to(ACC)
            sums += tile_sum(x * y, 0)
        total = sums.to(ACC)
        if EPILOGUE == _SIGMOID:
            total = 1.0 / (1.0 + tl.exp(-total))
        if EPILOGUE == _SIGMOID_GRAD:
            t = tl.load(t_ptr + n * P + ps, mask=p_ok, other=0.0)
            total = total * ((1.0 - t) * t)
        tl.store(maps, total, mask=p_ok)
    if APPLY:
        t = tl.load(maps, mask=p_ok, other=0.0)
        out_pixels = out_ptr + n * out_stride_n + ps[None, :] * out_stride_p
        for c0 in range(0, C, BLOCK_C):
            cs = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
            ok = (cs < C)[:, None] & p_ok[None, :]
            x = tl.load(x_pixels + cs[:, None] * x_stride_c, mask=ok, other=0.0).to(ACC)
            tl.store(out_pixels + cs[:, None] * out_stride_c, x * t[None, :], mask=ok)


@triton.jit
def _softmax_kernel(t_ptr, r_ptr, P, BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: t := softmax(t) over one sample's map. Backward: r := t (r - sum_p t r)."""
    n = tl.program_id(0).to(tl.int64)
    ts, rs = t_ptr + n * P, r_ptr + n * P
    if BACKWARD:
        total = tl.zeros([], SUM)
        for p0 in range(0, P, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            ok = ps < P
            total += tile_sum(tl.load(ts + ps, mask=ok, other=0.0) * tl.load(rs + ps, mask=ok, other=0.0), 0)
        # u = t (r - sum_tr) with sum_tr unrounded: u sums to 0, so grad_s = sum u a cancels, and
        # a sum_tr rounded to float would shift every u alike.
        for p0 in range(0, P, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            ok = ps < P
            t = tl.load(ts + ps, mask=ok)
            tl.store(rs + ps, (t.to(SUM) * (tl.load(rs + ps, mask=ok).to(SUM) - total)).to(ACC), mask=ok)
    else:
        # NaN-propagating max (tl.max drops NaN), as torch.softmax.
        top = tl.full([BLOCK], float("-inf"), ACC)
        has_nan = tl.zeros([BLOCK], tl.int32)
        for p0 in range(0, P, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            z = tl.load(ts + ps, mask=ps < P, other=float("-inf"))
            has_nan = tl.maximum(has_nan, (z != z).to(tl.int32))
            top = tl.maximum(top, tl.where(z != z, float("-inf"), z))
        top_all = tl.where(tl.max(has_nan, axis=0) > 0, float("nan"), tl.max(top, axis=0))
        sums = tl.zeros([], SUM)
        for p0 in range(0, P, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            ok = ps < P
            sums += tile_sum(tl.where(ok, tl.exp(tl.load(ts + ps, mask=ok, other=0.0) - top_all), 0.0), 0)
        total = sums.to(ACC)
        for p0 in range(0, P, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            ok = ps < P
            tl.store(ts + ps, tl.exp(tl.load(ts + ps, mask=ok) - top_all) / total, mask=ok)


@triton.jit
def _input_grad_kernel(grad_out_ptr, grad_out_stride_n, grad_out_stride_c, grad_out_stride_p,
                       a_ptr, a_stride_n, a_stride_c, a_stride_p, s_ptr, s_stride_n, s_stride_c, t_ptr, u_ptr,
                       grad_a_ptr, grad_a_stride_n, grad_a_stride_c, grad_a_stride_p, grad_s_ptr, C, P,
                       ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad_a = g t + s u and grad_s = sum_p u a, for one block of channels of one sample."""
    n = tl.program_id(0).to(tl.int64)
    cs = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    c_ok = cs < C
    s = tl.load(s_ptr + n * s_stride_n + cs * s_stride_c, mask=c_ok, other=0.0).to(ACC)
    grad_out_rows = grad_out_ptr + n * grad_out_stride_n + cs[:, None] * grad_out_stride_c
    a_rows = a_ptr + n * a_stride_n + cs[:, None] * a_stride_c
    grad_a_rows = grad_a_ptr + n * grad_a_stride_n + cs[:, None] * grad_a_stride_c
    grad_s = tl.zeros([BLOCK_C], SUM)
    for p0 in range(0, P, BLOCK_P):
        ps = (p0 + tl.arange(0, BLOCK_P)).to(tl.int64)
        p_ok = ps < P
        ok = c_ok[:, None] & p_ok[None, :]
        t = tl.load(t_ptr + n * P + ps, mask=p_ok, other=0.0)
        u = tl.load(u_ptr + n * P + ps, mask=p_ok, other=0.0)
        g = tl.load(grad_out_rows + ps[None, :] * grad_out_stride_p, mask=ok, other=0.0).to(ACC)
        a = tl.load(a_rows + ps[None, :] * a_stride_p, mask=ok, other=0.0).to(ACC)
        grad_a = g * t[None, :] + s[:, None] * u[None, :]
        tl.store(grad_a_rows + ps[None, :] * grad_a_stride_p, grad_a, mask=ok)
        grad_s += tile_sum(tl.where(ok, u[None, :] * a, 0.0), 1)
    tl.store(grad_s_ptr + n * C + cs, grad_s.to(ACC), mask=c_ok)


def _new_map(a: torch.Tensor) -> torch.Tensor:
    n, _, h, w = a.shape
    return a.new_empty(n, 1, h, w, dtype=torch.float64 if a.dtype == torch.float64 else torch.float32)


def _pixel_pass(x, y, y_strides, map_, out=None, reduce=True, epilogue=_STORE, apply=False, t=None):
    """One launch of _pixel_kernel over every (sample, block of pixels) of x."""
    block_c, block_p = pixel_tiles(x)
    n, c = x.shape[:2]
    p = x.shape[2] * x.shape[3]
    _pixel_kernel[(n, triton.cdiv(p, block_p))](
        x, *ncp_strides(x), y, *y_strides, map_, map_ if t is None else t, map_ if out is None else out,
        *(ncp_strides(out) if out is not None else (0, 0, 0)), c, p,
        REDUCE=reduce, EPILOGUE=epilogue, APPLY=apply, ACC=acc_dtype(x.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
    )


def _softmax_pass(t, r, backward):
    n, p = t.shape[0], t.shape[2] * t.shape[3]
    _softmax_kernel[(n,)](t, r, p, BACKWARD=backward, ACC=acc_dtype(t.dtype), BLOCK=min(1024, triton.next_power_of_2(p)))


@torch.library.custom_op("camfast::channel_spatial_attention_triton", mutates_args=())
def channel_spatial_attention_triton(a: torch.Tensor, s: torch.Tensor, softmax: bool) -> tuple[torch.Tensor, torch.Tensor]:
    check_channel_spatial_attention("camfast::channel_spatial_attention_triton", a, s, softmax)
    a = with_mergeable_hw(a)
    out, t = empty_nchw_like(a), _new_map(a)
    if a.shape[0] * a.shape[2] * a.shape[3]:
        s_strides = (s.stride(0), s.stride(1), 0)  # s read as [N, C, P] with a zero pixel stride
        if softmax:
            _pixel_pass(a, s, s_strides, t)
            _softmax_pass(t, t, False)
            _pixel_pass(a, s, s_strides, t, out, reduce=False, apply=True)
        else:
            _pixel_pass(a, s, s_strides, t, out, epilogue=_SIGMOID, apply=True)
    return out, t


@torch.library.custom_op("camfast::_channel_spatial_attention_backward_triton", mutates_args=())
def channel_spatial_attention_backward_triton(
    grad_out: torch.Tensor, a: torch.Tensor, s: torch.Tensor, t: torch.Tensor, softmax: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    check_channel_spatial_attention_backward("camfast::_channel_spatial_attention_backward_triton", grad_out, a, s, t,
                                             softmax)
    a, grad_out, t = with_mergeable_hw(a), with_mergeable_hw(grad_out), t.contiguous()
    n, c = a.shape[:2]
    grad_a, grad_s = empty_nchw_like(a), s.new_empty(n, c)
    if n * a.shape[2] * a.shape[3]:
        u = torch.empty_like(t)
        _pixel_pass(a, grad_out, ncp_strides(grad_out), u, epilogue=_STORE if softmax else _SIGMOID_GRAD, t=t)
        if softmax:
            _softmax_pass(t, u, True)
        block_c, block_p = row_tiles(a)
        _input_grad_kernel[(n, triton.cdiv(c, block_c))](
            grad_out, *ncp_strides(grad_out), a, *ncp_strides(a), s, s.stride(0), s.stride(1), t, u,
            grad_a, *ncp_strides(grad_a), grad_s, c, a.shape[2] * a.shape[3],
            ACC=acc_dtype(a.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
        )
    return grad_a, grad_s


register_channel_spatial_attention("_triton")
