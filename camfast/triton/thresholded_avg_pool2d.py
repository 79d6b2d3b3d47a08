"""Thresholded average pooling in Triton: one program per (sample, block of channels)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_nchw_like, ncp_strides, with_mergeable_hw
from .._registrations import (
    check_thresholded_avg_pool2d,
    check_thresholded_avg_pool2d_backward,
    register_thresholded_avg_pool2d,
)
from ._utils import SUM, acc_dtype, round_to, row_tiles, tile_sum


@triton.jit
def _forward_kernel(x_ptr, out_ptr, thr_ptr, cnt_ptr, C, P, x_stride_n, x_stride_c, x_stride_p, tau: tl.float64,
                    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    rows = x_ptr + n * x_stride_n + cs.to(tl.int64)[:, None] * x_stride_c
    # NaN-propagating max: tl.max drops NaN, so it is tracked beside the maximum.
    row_max = tl.full([BLOCK_C], float("-inf"), ACC)
    has_nan = tl.zeros([BLOCK_C], tl.int32)
    for p0 in range(0, P, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        ok = c_ok[:, None] & (ps < P)[None, :]
        v = tl.load(rows + ps.to(tl.int64)[None, :] * x_stride_p, mask=ok, other=float("-inf")).to(ACC)
        is_nan = v != v
        has_nan = tl.maximum(has_nan, tl.max(is_nan.to(tl.int32), axis=1))
        row_max = tl.maximum(row_max, tl.max(tl.where(is_nan, float("-inf"), v), axis=1))
    row_max = tl.where(has_nan > 0, float("nan"), row_max)
    # Rounded to the input dtype like torch's `amax * tau`, so `x > t` selects what torch selects.
    # (tl.full casts the float64 tau to ACC; the interpreter passes it as a Python float.)
    t = round_to(row_max * tl.full([BLOCK_C], tau, ACC), x_ptr.dtype.element_ty)
    t_acc = t.to(ACC)
    total = tl.zeros([BLOCK_C], SUM)
    count = tl.zeros([BLOCK_C], tl.int32)
    for p0 in range(0, P, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        ok = c_ok[:, None] & (ps < P)[None, :]
        v = tl.load(rows + ps.to(tl.int64)[None, :] * x_stride_p, mask=ok, other=float("-inf")).to(ACC)
        keep = v > t_acc[:, None]
        total += tile_sum(tl.where(keep, v, 0.0), 1)
        count += tl.sum((keep & (v > 0.0)).to(tl.int32), axis=1)
    r = n * C + cs
    tl.store(out_ptr + r, (total / tl.maximum(count, 1).to(SUM)).to(ACC).to(out_ptr.dtype.element_ty), mask=c_ok)
    tl.store(thr_ptr + r, t, mask=c_ok)
    tl.store(cnt_ptr + r, count, mask=c_ok)


@triton.jit
def _backward_kernel(grad_out_ptr, x_ptr, thr_ptr, cnt_ptr, grad_x_ptr, C, P, x_stride_n, x_stride_c, x_stride_p,
                     grad_x_stride_n, grad_x_stride_c, grad_x_stride_p,
                     ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    r = n * C + cs
    t = tl.load(thr_ptr + r, mask=c_ok).to(ACC)
    count = tl.maximum(tl.load(cnt_ptr + r, mask=c_ok, other=1), 1)
    kept = (tl.load(grad_out_ptr + r, mask=c_ok).to(ACC) / count.to(ACC)).to(grad_x_ptr.dtype.element_ty)
    rows = x_ptr + n * x_stride_n + cs.to(tl.int64)[:, None] * x_stride_c
    out_rows = grad_x_ptr + n * grad_x_stride_n + cs.to(tl.int64)[:, None] * grad_x_stride_c
    for p0 in range(0, P, BLOCK_P):
        ps = (p0 + tl.arange(0, BLOCK_P)).to(tl.int64)
        ok = c_ok[:, None] & (ps < P)[None, :]
        v = tl.load(rows + ps[None, :] * x_stride_p, mask=ok).to(ACC)
        grad = tl.where(v > t[:, None], kept[:, None], 0.0)
        tl.store(out_rows + ps[None, :] * grad_x_stride_p, grad, mask=ok)


def _grid(x: torch.Tensor, block_c: int):
    return (x.shape[0], triton.cdiv(x.shape[1], block_c))


@torch.library.custom_op("camfast::thresholded_avg_pool2d_triton", mutates_args=())
def thresholded_avg_pool2d_triton(x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_thresholded_avg_pool2d("camfast::thresholded_avg_pool2d_triton", x, tau)
    x = with_mergeable_hw(x)
    n, c = x.shape[:2]
    out, thr = x.new_empty(n, c), x.new_empty(n, c)
    cnt = x.new_empty(n, c, dtype=torch.int32)
    if x.numel():
        block_c, block_p = row_tiles(x)
        _forward_kernel[_grid(x, block_c)](
            x, out, thr, cnt, c, x.shape[2] * x.shape[3], *ncp_strides(x), tau,
            ACC=acc_dtype(x.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
        )
    return out, thr, cnt


@torch.library.custom_op("camfast::_thresholded_avg_pool2d_backward_triton", mutates_args=())
def thresholded_avg_pool2d_backward_triton(
    grad_out: torch.Tensor, x: torch.Tensor, threshold: torch.Tensor, count: torch.Tensor
) -> torch.Tensor:
    check_thresholded_avg_pool2d_backward("camfast::_thresholded_avg_pool2d_backward_triton", grad_out, x, threshold,
                                          count)
    x = with_mergeable_hw(x)
    grad_x = empty_nchw_like(x)
    if x.numel():
        block_c, block_p = row_tiles(x)
        _backward_kernel[_grid(x, block_c)](
            grad_out.contiguous(), x, threshold.contiguous(), count.contiguous(), grad_x,
            x.shape[1], x.shape[2] * x.shape[3], *ncp_strides(x), *ncp_strides(grad_x),
            ACC=acc_dtype(x.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
        )
    return grad_x


register_thresholded_avg_pool2d("_triton")
