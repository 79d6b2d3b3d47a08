"""Score-CAM masked inputs in Triton: one program per map for its extrema, then one program per
(map, block of pixels) computing the mask once and writing it times every image channel.

The bilinear taps of each output row and column are computed once per call on the host side
(tiny tensors, F.interpolate's formula in the accumulation dtype) and gathered by the kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import ncp_strides, with_mergeable_hw
from .._registrations import register_score_cam_masks
from ._utils import acc_dtype

BLOCK = 1024  # pixels per program in the upsampled passes
SOURCE_BLOCK = 1024  # source values per step of the source extrema


def _axis_taps(size_in: int, size_out: int, align_corners: bool, dtype: torch.dtype, device):
    """(indices [2, out] int64, weights [2, out]) of F.interpolate's bilinear samples along one axis."""
    dst = torch.arange(size_out, device=device, dtype=dtype)
    if size_in == size_out:
        return torch.stack([dst, dst]).long(), torch.stack([torch.ones_like(dst), torch.zeros_like(dst)])
    if align_corners:
        scale = torch.tensor((size_in - 1) if size_out > 1 else 0, dtype=dtype) / max(size_out - 1, 1)
        src = scale.to(device) * dst
    else:
        scale = torch.tensor(size_in, dtype=dtype) / size_out
        src = (scale.to(device) * (dst + 0.5) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(size_in - 1)
    lam = (src - i0.to(dtype)).clamp(0, 1)
    return torch.stack([i0, i0 + (i0 < size_in - 1).long()]), torch.stack([1 - lam, lam])


@triton.jit
def _upsampled(m_ptr, s_h, s_w, ys, xs, ok, row_i, row_w, col_i, col_w, H, W, src_lo, src_span, ACC: tl.constexpr):
    """The upsampled map at pixels (ys, xs): each source tap mapped by (a - src_lo) / src_span, then
    interpolated along W within rows and along H, F.interpolate's order."""
    y0 = tl.load(row_i + ys, mask=ok, other=0)
    y1 = tl.load(row_i + H + ys, mask=ok, other=0)
    wy0 = tl.load(row_w + ys, mask=ok, other=0.0)
    wy1 = tl.load(row_w + H + ys, mask=ok, other=0.0)
    x0 = tl.load(col_i + xs, mask=ok, other=0)
    x1 = tl.load(col_i + W + xs, mask=ok, other=0)
    wx0 = tl.load(col_w + xs, mask=ok, other=0.0)
    wx1 = tl.load(col_w + W + xs, mask=ok, other=0.0)
    v00 = (tl.load(m_ptr + y0 * s_h + x0 * s_w, mask=ok, other=0.0).to(ACC) - src_lo) / src_span
    v01 = (tl.load(m_ptr + y0 * s_h + x1 * s_w, mask=ok, other=0.0).to(ACC) - src_lo) / src_span
    v10 = (tl.load(m_ptr + y1 * s_h + x0 * s_w, mask=ok, other=0.0).to(ACC) - src_lo) / src_span
    v11 = (tl.load(m_ptr + y1 * s_h + x1 * s_w, mask=ok, other=0.0).to(ACC) - src_lo) / src_span
    return (v00 * wx0 + v01 * wx1) * wy0 + (v10 * wx0 + v11 * wx1) * wy1


@triton.jit
def _extrema(v, ok, lo, hi, has_nan):
    """Running NaN-propagating extrema: tl.min/tl.max drop NaN, so it is tracked beside them."""
    is_nan = (v != v) & ok
    has_nan = tl.maximum(has_nan, tl.max(is_nan.to(tl.int32), axis=0))
    lo = tl.minimum(lo, tl.min(tl.where(ok & ~is_nan, v, float("inf")), axis=0))
    hi = tl.maximum(hi, tl.max(tl.where(ok & ~is_nan, v, float("-inf")), axis=0))
    return lo, hi, has_nan


@triton.jit
def _stats_kernel(act_ptr, stats_ptr, const_ptr, K, h, w, a_n, a_k, a_h, a_w, row_i, row_w, col_i, col_w, H, W,
                  FEATURE: tl.constexpr, ACC: tl.constexpr, SOURCE_BLOCK: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    m_ptr = act_ptr + (r // K) * a_n + (r % K) * a_k
    lo = tl.full([], float("inf"), ACC)
    hi = tl.full([], float("-inf"), ACC)
    has_nan = tl.zeros([], tl.int32)
    for p0 in range(0, h * w, SOURCE_BLOCK):
        ps = p0 + tl.arange(0, SOURCE_BLOCK)
        ok = ps < h * w
        v = tl.load(m_ptr + (ps // w) * a_h + (ps % w) * a_w, mask=ok, other=0.0).to(ACC)
        lo, hi, has_nan = _extrema(v, ok, lo, hi, has_nan)
    constant = (has_nan == 0) & (lo == hi)
    nan = tl.full([], float("nan"), ACC)
    lo = tl.where(has_nan > 0, nan, lo)
    hi = tl.where(has_nan > 0, nan, hi)
    zero = tl.zeros([], ACC)
    one = zero + 1.0
    src_lo, src_span, up_lo, up_span = zero, one, zero, one
    if FEATURE:  # a constant map keeps span 1: no 0 / 0 is ever computed
        src_lo = tl.where(constant, zero, lo)
        src_span = tl.where(constant, one, hi - lo)
    elif not constant:
        lo = tl.full([], float("inf"), ACC)
        hi = tl.full([], float("-inf"), ACC)
        has_nan = tl.zeros([], tl.int32)
        for p0 in range(0, H * W, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            ok = ps < H * W
            up = _upsampled(m_ptr, a_h, a_w, ps // W, ps % W, ok, row_i, row_w, col_i, col_w, H, W, zero, one, ACC)
            lo, hi, has_nan = _extrema(up, ok, lo, hi, has_nan)
        constant = (has_nan == 0) & (lo == hi)
        up_lo = tl.where(has_nan > 0, nan, lo)
        up_span = tl.where(has_nan > 0, nan, hi - lo)
    tl.store(stats_ptr + r * 4 + 0, src_lo)
    tl.store(stats_ptr + r * 4 + 1, src_span)
    tl.store(stats_ptr + r * 4 + 2, up_lo)
    tl.store(stats_ptr + r * 4 + 3, up_span)
    tl.store(const_ptr + r, constant)


@triton.jit
def _masks_kernel(act_ptr, img_ptr, out_ptr, stats_ptr, const_ptr, K, C, a_n, a_k, a_h, a_w, i_n, i_c, i_p,
                  row_i, row_w, col_i, col_w, H, W, ACC: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    ps = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = ps < H * W
    src_lo = tl.load(stats_ptr + r * 4 + 0)
    src_span = tl.load(stats_ptr + r * 4 + 1)
    up_lo = tl.load(stats_ptr + r * 4 + 2)
    up_span = tl.load(stats_ptr + r * 4 + 3)
    constant = tl.load(const_ptr + r)
    n = r // K
    up = _upsampled(act_ptr + n * a_n + (r % K) * a_k, a_h, a_w, ps // W, ps % W, ok, row_i, row_w, col_i, col_w,
                    H, W, src_lo, src_span, ACC)
    mask = tl.where(constant, 0.0, (up - up_lo) / up_span)
    out_row = out_ptr + r * C * H * W
    for c in range(C):
        v = tl.load(img_ptr + n * i_n + c * i_c + ps * i_p, mask=ok, other=0.0).to(ACC)
        tl.store(out_row + c * H * W + ps, (mask * v).to(out_ptr.dtype.element_ty), mask=ok)


@torch.library.custom_op("camfast::score_cam_masks_triton", mutates_args=())
def score_cam_masks_triton(
    act: torch.Tensor, image: torch.Tensor, align_corners: bool, normalize_feature: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    image = with_mergeable_hw(image)
    n, k, h, w = act.shape
    c, H, W = image.shape[1:]
    out = act.new_empty(n, k, c, H, W)
    constant = act.new_empty(n, k, dtype=torch.bool)
    if n * k == 0:
        return out, constant
    acc = torch.float64 if act.dtype == torch.float64 else torch.float32
    row_i, row_w = _axis_taps(h, H, align_corners, acc, act.device)
    col_i, col_w = _axis_taps(w, W, align_corners, acc, act.device)
    stats = act.new_empty(n * k, 4, dtype=acc)
    taps = (row_i, row_w, col_i, col_w, H, W)
    _stats_kernel[(n * k,)](
        act, stats, constant, k, h, w, *act.stride(), *taps,
        FEATURE=normalize_feature, ACC=acc_dtype(act.dtype), SOURCE_BLOCK=SOURCE_BLOCK, BLOCK=BLOCK,
    )
    _masks_kernel[(n * k, triton.cdiv(H * W, BLOCK))](
        act, image, out, stats, constant, k, c, *act.stride(), *ncp_strides(image), *taps,
        ACC=acc_dtype(act.dtype), BLOCK=BLOCK,
    )
    return out, constant


register_score_cam_masks("_triton")
