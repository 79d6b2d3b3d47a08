"""The gradient CAM methods' raw map in Triton: for the weighted methods, one program per (image,
block of channels) computes their weights; then one program per (image, block of pixels) sums
over the channels and applies the ReLU. An image is (class t, sample n) of grad [T, N, K, h, w].

Each program sums its [BLOCK_C, BLOCK_P] tiles (float32, float64 for float64 inputs) and adds the
tile sums into float64 totals (see _utils). The method codes are the order of
csrc/kernels/weighted_channel_sum.cuh's Method, which is the order of METHODS.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import ncp_strides, with_mergeable_hw
from .._registrations import check_weighted_channel_sum, register_weighted_channel_sum
from ..reference.weighted_channel_sum import METHODS, WEIGHTED
from ._utils import SUM, acc_dtype, pixel_tiles, row_tiles, tile_sum

GRAD_CAM, XGRAD_CAM, GRAD_CAM_PP, GRAD_CAM_PP_GRADCAM, HIRES_CAM, ELEMENT_WISE, LAYER_CAM = map(tl.constexpr, range(len(METHODS)))


@triton.jit
def _relu(v):
    return tl.where(v < 0, 0.0, v)  # NaN kept, as torch.relu


@triton.jit
def _alpha(g, s, METHOD: tl.constexpr):
    """Grad-CAM++'s alpha: the authors' (0 / 0 counts as 0) or grad-cam's (+1e-6, 0 where g == 0)."""
    g2 = g * g
    denom = 2.0 * g2 + s * g2 * g
    if METHOD == GRAD_CAM_PP:
        alpha = g2 / tl.where(denom != 0, denom, 1.0)
    else:
        alpha = tl.where(g != 0, g2 / (denom + 1e-6), 0.0)
    return alpha


@triton.jit
def _numerator(g, a, s, METHOD: tl.constexpr):
    if METHOD == GRAD_CAM:
        v = g
    elif METHOD == XGRAD_CAM:
        v = g * a
    else:
        v = _alpha(g, s, METHOD) * _relu(g)
    return v


@triton.jit
def _denominator(g, a, s, METHOD: tl.constexpr):
    if METHOD == XGRAD_CAM:
        v = a
    else:
        v = _alpha(g, s, METHOD)
    return v


@triton.jit
def _term(g, a, METHOD: tl.constexpr):
    if METHOD == HIRES_CAM:
        v = g * a
    elif METHOD == ELEMENT_WISE:
        v = _relu(g * a)
    else:
        v = _relu(g) * a
    return v


@triton.jit
def _weights_kernel(act_ptr, grad_ptr, w_ptr, N, K, P, act_stride_n, act_stride_k, act_stride_p,
                    grad_stride_t, grad_stride_n, grad_stride_k, grad_stride_p, eps: tl.float64,
                    METHOD: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < K
    a_rows = act_ptr + (i % N) * act_stride_n + cs[:, None] * act_stride_k
    g_rows = grad_ptr + (i // N) * grad_stride_t + (i % N) * grad_stride_n + cs[:, None] * grad_stride_k
    # Padding loads as a = g = 0, which adds 0 to every sum below.
    s = tl.zeros([BLOCK_C, 1], ACC)
    if METHOD == GRAD_CAM_PP or METHOD == GRAD_CAM_PP_GRADCAM:
        total = tl.zeros([BLOCK_C, 1], SUM)
        for p0 in range(0, P, BLOCK_P):
            ps = p0 + tl.arange(0, BLOCK_P)
            ok = c_ok[:, None] & (ps < P)[None, :]
            total += tile_sum(tl.load(a_rows + ps[None, :] * act_stride_p, mask=ok, other=0.0), 1)[:, None]
        s = total.to(ACC)
    num_sum = tl.zeros([BLOCK_C], SUM)
    den_sum = tl.zeros([BLOCK_C], SUM)
    for p0 in range(0, P, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        ok = c_ok[:, None] & (ps < P)[None, :]
        g = tl.load(g_rows + ps[None, :] * grad_stride_p, mask=ok, other=0.0).to(ACC)
        if METHOD == GRAD_CAM:  # its weight reads g alone
            a = g
        else:
            a = tl.load(a_rows + ps[None, :] * act_stride_p, mask=ok, other=0.0).to(ACC)
        num_sum += tile_sum(_numerator(g, a, s, METHOD), 1)
        if METHOD == XGRAD_CAM or METHOD == GRAD_CAM_PP:
            den_sum += tile_sum(_denominator(g, a, s, METHOD), 1)
    if METHOD == GRAD_CAM:
        w = num_sum / P
    elif METHOD == XGRAD_CAM:
        w = num_sum / (den_sum + tl.full([], eps, SUM))
    elif METHOD == GRAD_CAM_PP:
        w = num_sum / tl.where(den_sum != 0, den_sum, 1.0)
    else:
        w = num_sum
    tl.store(w_ptr + i * K + cs, w.to(ACC), mask=c_ok)


@triton.jit
def _map_kernel(act_ptr, grad_ptr, w_ptr, out_ptr, N, K, P, act_stride_n, act_stride_k, act_stride_p,
                grad_stride_t, grad_stride_n, grad_stride_k, grad_stride_p,
                METHOD: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    ps = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = ps < P
    a_cols = act_ptr + (i % N) * act_stride_n + ps[None, :] * act_stride_p
    g_cols = grad_ptr + (i // N) * grad_stride_t + (i % N) * grad_stride_n + ps[None, :] * grad_stride_p
    total = tl.zeros([BLOCK_P], SUM)
    for c0 in range(0, K, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        c_ok = cs < K
        ok = c_ok[:, None] & p_ok[None, :]
        a = tl.load(a_cols + cs[:, None] * act_stride_k, mask=ok, other=0.0).to(ACC)
        if METHOD == GRAD_CAM or METHOD == XGRAD_CAM or METHOD == GRAD_CAM_PP or METHOD == GRAD_CAM_PP_GRADCAM:
            w = tl.load(w_ptr + i * K + cs, mask=c_ok, other=0.0)
            total += tile_sum(w[:, None] * a, 0)
        else:
            g = tl.load(g_cols + cs[:, None] * grad_stride_k, mask=ok, other=0.0).to(ACC)
            total += tile_sum(_term(g, a, METHOD), 0)
    tl.store(out_ptr + i * P + ps, _relu(total.to(ACC)).to(out_ptr.dtype.element_ty), mask=p_ok)


@torch.library.custom_op("camfast::weighted_channel_sum_triton", mutates_args=())
def weighted_channel_sum_triton(act: torch.Tensor, grad: torch.Tensor, method: str, eps: float) -> torch.Tensor:
    check_weighted_channel_sum("camfast::weighted_channel_sum_triton", act, grad, method, eps)
    act = with_mergeable_hw(act)
    classes = with_mergeable_hw(grad if grad.dim() == 5 else grad.unsqueeze(0))
    n, k, h, w = act.shape
    out = act.new_empty(*grad.shape[:-3], h, w)
    images = classes.shape[0] * n
    if images == 0:
        return out
    code, acc = METHODS.index(method), acc_dtype(act.dtype)
    strides = (*ncp_strides(act), classes.stride(0), *ncp_strides(classes))
    weights = act  # unused by the element-wise methods
    if method in WEIGHTED:
        weights = act.new_empty(images, k, dtype=torch.float64 if act.dtype == torch.float64 else torch.float32)
        block_c, block_p = row_tiles(act)
        if k > 0:
            _weights_kernel[(images, triton.cdiv(k, block_c))](
                act, classes, weights, n, k, h * w, *strides, eps, METHOD=code, ACC=acc, BLOCK_C=block_c,
                BLOCK_P=block_p,
            )
    block_c, block_p = pixel_tiles(act)
    _map_kernel[(images, triton.cdiv(h * w, block_p))](
        act, classes, weights, out, n, k, h * w, *strides, METHOD=code, ACC=acc, BLOCK_C=block_c, BLOCK_P=block_p,
    )
    return out


register_weighted_channel_sum("_triton")
