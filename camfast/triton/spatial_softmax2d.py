"""Spatial softmax and soft-argmax in Triton: one program per (sample, block of channels).

Each program walks its rows tile by tile with an online softmax: a running max m and sums
relative to it, rescaled by exp(m_old - m_new) when the max grows. The soft-argmax finishes in that
single pass (sum e, sum e X, sum e Y); the softmax makes a second pass to write exp(z - m) / s.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_nchw_like, ncp_strides, with_mergeable_hw
from .._registrations import (
    check_spatial_soft_argmax2d,
    check_spatial_soft_argmax2d_backward,
    check_spatial_softmax2d,
    check_spatial_softmax2d_backward,
    register_spatial_softmax2d,
    row_stats_like,
)
from ._utils import SUM, acc_dtype, row_tiles, tile_sum


@triton.jit
def _coordinate(k, size, NORMALIZED: tl.constexpr, ACC: tl.constexpr):
    """torch.linspace(-1, 1, size)[k] (from the nearer end, as torch does), 0 for size 1; or k."""
    kf = k.to(ACC)
    if NORMALIZED:
        step = 2.0 / tl.maximum(size - 1, 1).to(ACC)
        from_end = 1.0 - step * (size - 1 - k).to(ACC)
        value = tl.where(k < size // 2, -1.0 + step * kf, from_end)
        return tl.where(size == 1, 0.0, value)
    return kf


@triton.jit
def _tile(x_ptr, rows, c_ok, p0, P, x_stride_p, inv_t, ACC: tl.constexpr, BLOCK_P: tl.constexpr):
    """z = x / T for one [BLOCK_C, BLOCK_P] tile (-inf outside the tensor), and the pixel indices."""
    ps = p0 + tl.arange(0, BLOCK_P)
    ok = c_ok[:, None] & (ps < P)[None, :]
    v = tl.load(rows + ps.to(tl.int64)[None, :] * x_stride_p, mask=ok, other=float("-inf")).to(ACC)
    return v * inv_t[:, None], ps, ok


@triton.jit
def _online_max(m, has_nan, z):
    """(new max, its finite shift for exp, factor rescaling sums kept relative to the old max).

    tl.max drops NaN, so NaN is tracked beside the max. A -inf max shifts by 0 (its sums are 0);
    a +inf max leaves garbage that _finish turns into NaN, as torch.softmax gives it.
    """
    is_nan = z != z
    has_nan = tl.maximum(has_nan, tl.max(is_nan.to(tl.int32), axis=1))
    new_m = tl.maximum(m, tl.max(tl.where(is_nan, float("-inf"), z), axis=1))
    shift = tl.where(new_m == float("-inf"), 0.0, new_m)
    alpha = tl.where(m == float("-inf"), 0.0, tl.exp(m - shift))
    return new_m, has_nan, shift, alpha


@triton.jit
def _finish(m, s, has_nan):
    """Row max and row sum as the backward reads them: NaN where torch.softmax gives NaN."""
    m = tl.where(has_nan > 0, float("nan"), m)
    finite = (m > float("-inf")) & (m < float("inf"))
    return m, tl.where(finite, s, float("nan"))


@triton.jit
def _softmax_forward_kernel(x_ptr, out_ptr, max_ptr, sum_ptr, C, P, x_stride_n, x_stride_c, x_stride_p,
                            out_stride_n, out_stride_c, out_stride_p, inv_t: tl.float64,
                            ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    rows = x_ptr + n * x_stride_n + cs.to(tl.int64)[:, None] * x_stride_c
    inv = tl.full([BLOCK_C], inv_t, ACC)
    m = tl.full([BLOCK_C], float("-inf"), ACC)
    s = tl.zeros([BLOCK_C], SUM)
    has_nan = tl.zeros([BLOCK_C], tl.int32)
    for p0 in range(0, P, BLOCK_P):
        z, ps, ok = _tile(x_ptr, rows, c_ok, p0, P, x_stride_p, inv, ACC, BLOCK_P)
        m, has_nan, shift, alpha = _online_max(m, has_nan, z)
        s = s * alpha + tile_sum(tl.exp(z - shift[:, None]), 1)
    m, s = _finish(m, s.to(ACC), has_nan)
    r = n * C + cs
    tl.store(max_ptr + r, m, mask=c_ok)
    tl.store(sum_ptr + r, s, mask=c_ok)
    out_rows = out_ptr + n * out_stride_n + cs.to(tl.int64)[:, None] * out_stride_c
    for p0 in range(0, P, BLOCK_P):
        z, ps, ok = _tile(x_ptr, rows, c_ok, p0, P, x_stride_p, inv, ACC, BLOCK_P)
        p = tl.exp(z - m[:, None]) / s[:, None]
        tl.store(out_rows + ps.to(tl.int64)[None, :] * out_stride_p, p, mask=ok)


@triton.jit
def _softmax_backward_kernel(grad_out_ptr, x_ptr, max_ptr, sum_ptr, grad_x_ptr, C, P,
                             grad_out_stride_n, grad_out_stride_c, grad_out_stride_p,
                             x_stride_n, x_stride_c, x_stride_p,
                             grad_x_stride_n, grad_x_stride_c, grad_x_stride_p, inv_t: tl.float64,
                             ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    r = n * C + cs
    m = tl.load(max_ptr + r, mask=c_ok, other=0.0)
    s = tl.load(sum_ptr + r, mask=c_ok, other=1.0)
    inv = tl.full([BLOCK_C], inv_t, ACC)
    rows = x_ptr + n * x_stride_n + cs.to(tl.int64)[:, None] * x_stride_c
    grad_out_rows = grad_out_ptr + n * grad_out_stride_n + cs.to(tl.int64)[:, None] * grad_out_stride_c
    total = tl.zeros([BLOCK_C], SUM)
    for p0 in range(0, P, BLOCK_P):
        z, ps, ok = _tile(x_ptr, rows, c_ok, p0, P, x_stride_p, inv, ACC, BLOCK_P)
        g = tl.load(grad_out_rows + ps.to(tl.int64)[None, :] * grad_out_stride_p, mask=ok, other=0.0).to(ACC)
        total += tile_sum(tl.where(ok, g * tl.exp(z - m[:, None]) / s[:, None], 0.0), 1)
    dot = total.to(ACC)
    out_rows = grad_x_ptr + n * grad_x_stride_n + cs.to(tl.int64)[:, None] * grad_x_stride_c
    for p0 in range(0, P, BLOCK_P):
        z, ps, ok = _tile(x_ptr, rows, c_ok, p0, P, x_stride_p, inv, ACC, BLOCK_P)
        g = tl.load(grad_out_rows + ps.to(tl.int64)[None, :] * grad_out_stride_p, mask=ok, other=0.0).to(ACC)
        y = tl.exp(z - m[:, None]) / s[:, None]
        tl.store(out_rows + ps.to(tl.int64)[None, :] * grad_x_stride_p, inv[:, None] * y * (g - dot[:, None]), mask=ok)


@triton.jit
def _argmax_forward_kernel(x_ptr, out_ptr, max_ptr, sum_ptr, C, H, W, x_stride_n, x_stride_c, x_stride_p,
                           inv_t: tl.float64, NORMALIZED: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                           BLOCK_P: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    P = H * W
    rows = x_ptr + n * x_stride_n + cs.to(tl.int64)[:, None] * x_stride_c
    inv = tl.full([BLOCK_C], inv_t, ACC)
    m = tl.full([BLOCK_C], float("-inf"), ACC)
    s = tl.zeros([BLOCK_C], SUM)
    sx = tl.zeros([BLOCK_C], SUM)
    sy = tl.zeros([BLOCK_C], SUM)
    has_nan = tl.zeros([BLOCK_C], tl.int32)
    for p0 in range(0, P, BLOCK_P):
        z, ps, ok = _tile(x_ptr, rows, c_ok, p0, P, x_stride_p, inv, ACC, BLOCK_P)
        m, has_nan, shift, alpha = _online_max(m, has_nan, z)
        e = tl.exp(z - shift[:, None])
        cx = _coordinate(ps % W, W, NORMALIZED, ACC)
        cy = _coordinate(ps // W, H, NORMALIZED, ACC)
        s = s * alpha + tile_sum(e, 1)
        sx = sx * alpha + tile_sum(e * cx[None, :], 1)
        sy = sy * alpha + tile_sum(e * cy[None, :], 1)
    m, s = _finish(m, s, has_nan)
    r = n * C + cs
    tl.store(max_ptr + r, m, mask=c_ok)
    tl.store(sum_ptr + r, s.to(ACC), mask=c_ok)
    tl.store(out_ptr + 2 * r, (sx / s).to(ACC), mask=c_ok)
    tl.store(out_ptr + 2 * r + 1, (sy / s).to(ACC), mask=c_ok)


@triton.jit
def _argmax_backward_kernel(grad_out_ptr, out_ptr, x_ptr, max_ptr, sum_ptr, grad_x_ptr, C, H, W,
                            x_stride_n, x_stride_c, x_stride_p, grad_x_stride_n, grad_x_stride_c, grad_x_stride_p,
                            inv_t: tl.float64, NORMALIZED: tl.constexpr, ACC: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    P = H * W
    r = n * C + cs
    m = tl.load(max_ptr + r, mask=c_ok, other=0.0)
    s = tl.load(sum_ptr + r, mask=c_ok, other=1.0)
    g_x = tl.load(grad_out_ptr + 2 * r, mask=c_ok, other=0.0)
    g_y = tl.load(grad_out_ptr + 2 * r + 1, mask=c_ok, other=0.0)
    # g_x E_x + g_y E_y: the part of the gradient shared by the whole row.
    shared = g_x * tl.load(out_ptr + 2 * r, mask=c_ok, other=0.0) + g_y * tl.load(out_ptr + 2 * r + 1, mask=c_ok,
                                                                                   other=0.0)
    inv = tl.full([BLOCK_C], inv_t, ACC)
    k = inv / s
    rows = x_ptr + n * x_stride_n + cs.to(tl.int64)[:, None] * x_stride_c
    out_rows = grad_x_ptr + n * grad_x_stride_n + cs.to(tl.int64)[:, None] * grad_x_stride_c
    for p0 in range(0, P, BLOCK_P):
        z, ps, ok = _tile(x_ptr, rows, c_ok, p0, P, x_stride_p, inv, ACC, BLOCK_P)
        cx = _coordinate(ps % W, W, NORMALIZED, ACC)
        cy = _coordinate(ps // W, H, NORMALIZED, ACC)
        direction = g_x[:, None] * cx[None, :] + g_y[:, None] * cy[None, :] - shared[:, None]
        grad = k[:, None] * tl.exp(z - m[:, None]) * direction
        tl.store(out_rows + ps.to(tl.int64)[None, :] * grad_x_stride_p, grad, mask=ok)


def _launch(kernel, x, *args, **meta):
    block_c, block_p = row_tiles(x)
    grid = (x.shape[0], triton.cdiv(x.shape[1], block_c))
    kernel[grid](*args, ACC=acc_dtype(x.dtype), BLOCK_C=block_c, BLOCK_P=block_p, **meta)


@torch.library.custom_op("camfast::spatial_softmax2d_triton", mutates_args=())
def spatial_softmax2d_triton(x: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_spatial_softmax2d("camfast::spatial_softmax2d_triton", x, temperature)
    x = with_mergeable_hw(x)
    out = empty_nchw_like(x)
    row_max, row_sum = row_stats_like(x)
    if x.numel():
        _launch(_softmax_forward_kernel, x, x, out, row_max, row_sum, x.shape[1], x.shape[2] * x.shape[3],
                *ncp_strides(x), *ncp_strides(out), 1.0 / temperature)
    return out, row_max, row_sum


@torch.library.custom_op("camfast::_spatial_softmax2d_backward_triton", mutates_args=())
def spatial_softmax2d_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, row_max: torch.Tensor,
                                      row_sum: torch.Tensor, temperature: float) -> torch.Tensor:
    check_spatial_softmax2d_backward("camfast::_spatial_softmax2d_backward_triton", grad_out, x, row_max, row_sum,
                                     temperature)
    x, grad_out = with_mergeable_hw(x), with_mergeable_hw(grad_out)
    grad_x = empty_nchw_like(x)
    if x.numel():
        _launch(_softmax_backward_kernel, x, grad_out, x, row_max.contiguous(), row_sum.contiguous(), grad_x,
                x.shape[1], x.shape[2] * x.shape[3], *ncp_strides(grad_out), *ncp_strides(x), *ncp_strides(grad_x),
                1.0 / temperature)
    return grad_x


@torch.library.custom_op("camfast::spatial_soft_argmax2d_triton", mutates_args=())
def spatial_soft_argmax2d_triton(x: torch.Tensor, temperature: float,
                                 normalized_coordinates: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_spatial_soft_argmax2d("camfast::spatial_soft_argmax2d_triton", x, temperature, normalized_coordinates)
    x = with_mergeable_hw(x)
    row_max, row_sum = row_stats_like(x)
    out = row_max.new_empty(*x.shape[:2], 2)  # accumulation dtype, as csrc/ops/spatial_softmax2d.h
    if x.numel():
        _launch(_argmax_forward_kernel, x, x, out, row_max, row_sum, x.shape[1], x.shape[2], x.shape[3],
                *ncp_strides(x), 1.0 / temperature, NORMALIZED=normalized_coordinates)
    return out, row_max, row_sum


@torch.library.custom_op("camfast::_spatial_soft_argmax2d_backward_triton", mutates_args=())
def spatial_soft_argmax2d_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, out: torch.Tensor,
                                          row_max: torch.Tensor, row_sum: torch.Tensor, temperature: float,
                                          normalized_coordinates: bool) -> torch.Tensor:
    check_spatial_soft_argmax2d_backward("camfast::_spatial_soft_argmax2d_backward_triton", grad_out, x, out, row_max,
                                         row_sum, temperature, normalized_coordinates)
    x = with_mergeable_hw(x)
    grad_x = empty_nchw_like(x)
    if x.numel():
        _launch(_argmax_backward_kernel, x, grad_out.contiguous(), out.contiguous(), x, row_max.contiguous(),
                row_sum.contiguous(), grad_x, x.shape[1], x.shape[2], x.shape[3], *ncp_strides(x),
                *ncp_strides(grad_x), 1.0 / temperature, NORMALIZED=normalized_coordinates)
    return grad_x


register_spatial_softmax2d("_triton")
