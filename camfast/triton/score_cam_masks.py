"""Score-CAM masked inputs in Triton: one program per map for its extrema, then one program per
(map, block of pixels) computing the mask once and writing it times every image channel.

The bilinear taps follow F.interpolate's formula (csrc/kernels/score_cam_masks.cuh), with each
axis's scale divided once on the host in the accumulation dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import ncp_strides, with_mergeable_hw
from .._registrations import check_score_cam_masks, register_score_cam_masks
from ._utils import acc_dtype

BLOCK = 1024  # pixels per program in the upsampled passes
SOURCE_BLOCK = 1024  # source values per step of the source extrema


def _source_scale(size_in: int, size_out: int, align_corners: bool, dtype: torch.dtype) -> float:
    """F.interpolate's scale along one axis, rounded to dtype as torch's opmath computes it."""
    if align_corners:
        num, den = (size_in - 1, size_out - 1) if size_out > 1 else (0, 1)
    else:
        num, den = size_in, size_out
    return (torch.tensor(num, dtype=dtype) / den).item()


@triton.jit
def _tap(dst, size_in, size_out, scale, ALIGN: tl.constexpr, ACC: tl.constexpr):
    """(i0, i1, w0, w1): the two source samples of output coordinates dst and their weights."""
    d = dst.to(ACC)
    if ALIGN:
        src = scale * d
    else:
        src = tl.maximum(scale * (d + 0.5) - 0.5, 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int64), size_in - 1)
    lam = tl.minimum(tl.maximum(src - i0.to(ACC), 0.0), 1.0)
    i1 = i0 + (i0 < size_in - 1).to(tl.int64)
    same = size_in == size_out  # F.interpolate copies: weights exactly 1 and 0
    return (tl.where(same, dst, i0), tl.where(same, dst, i1), tl.where(same, 1.0, 1.0 - lam),
            tl.where(same, 0.0, lam))


@triton.jit
def _upsampled(m_ptr, stride_h, stride_w, ys, xs, h, w, H, W, scale_h, scale_w, src_lo, src_span,
               ALIGN: tl.constexpr, ACC: tl.constexpr):
    """The upsampled map at pixels (ys, xs) (in range): each source tap mapped by
    (a - src_lo) / src_span, then interpolated along W within rows and along H, F.interpolate's order."""
    y0, y1, wy0, wy1 = _tap(ys, h, H, scale_h, ALIGN, ACC)
    x0, x1, wx0, wx1 = _tap(xs, w, W, scale_w, ALIGN, ACC)
    v00 = (tl.load(m_ptr + y0 * stride_h + x0 * stride_w).to(ACC) - src_lo) / src_span
    v01 = (tl.load(m_ptr + y0 * stride_h + x1 * stride_w).to(ACC) - src_lo) / src_span
    v10 = (tl.load(m_ptr + y1 * stride_h + x0 * stride_w).to(ACC) - src_lo) / src_span
    v11 = (tl.load(m_ptr + y1 * stride_h + x1 * stride_w).to(ACC) - src_lo) / src_span
    return (v00 * wx0 + v01 * wx1) * wy0 + (v10 * wx0 + v11 * wx1) * wy1


@triton.jit
def _no_extrema(ACC: tl.constexpr):
    """The start of a running _extrema: an empty range, no NaN seen."""
    return tl.full([], float("inf"), ACC), tl.full([], float("-inf"), ACC), tl.zeros([], tl.int32)


@triton.jit
def _extrema(v, ok, lo, hi, has_nan):
    """Running NaN-propagating extrema: tl.min/tl.max drop NaN, so it is tracked beside them."""
    is_nan = (v != v) & ok
    has_nan = tl.maximum(has_nan, tl.max(is_nan.to(tl.int32), axis=0))
    lo = tl.minimum(lo, tl.min(tl.where(ok & ~is_nan, v, float("inf")), axis=0))
    hi = tl.maximum(hi, tl.max(tl.where(ok & ~is_nan, v, float("-inf")), axis=0))
    return lo, hi, has_nan


@triton.jit
def _stats_kernel(act_ptr, stats_ptr, const_ptr, K, act_stride_n, act_stride_k, act_stride_h, act_stride_w,
                  h, w, H, W, scale_h: tl.float64, scale_w: tl.float64, FEATURE: tl.constexpr, ALIGN: tl.constexpr,
                  ACC: tl.constexpr, SOURCE_BLOCK: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    m_ptr = act_ptr + (r // K) * act_stride_n + (r % K) * act_stride_k
    # (tl.full casts the float64 scales to ACC; the interpreter passes them as Python floats.)
    sh, sw = tl.full([], scale_h, ACC), tl.full([], scale_w, ACC)
    lo, hi, has_nan = _no_extrema(ACC)
    for p0 in range(0, h * w, SOURCE_BLOCK):
        ps = p0 + tl.arange(0, SOURCE_BLOCK)
        ok = ps < h * w
        v = tl.load(m_ptr + (ps // w) * act_stride_h + (ps % w) * act_stride_w, mask=ok, other=0.0).to(ACC)
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
        lo, hi, has_nan = _no_extrema(ACC)
        for p0 in range(0, H * W, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            ok = ps < H * W
            inside = tl.minimum(ps, H * W - 1)  # the tail recomputes the last pixel, counted nowhere
            up = _upsampled(m_ptr, act_stride_h, act_stride_w, inside // W, inside % W, h, w, H, W, sh, sw, zero, one,
                            ALIGN, ACC)
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
def _masks_kernel(act_ptr, img_ptr, out_ptr, stats_ptr, const_ptr, K, C,
                  act_stride_n, act_stride_k, act_stride_h, act_stride_w,
                  image_stride_n, image_stride_c, image_stride_p,
                  h, w, H, W, scale_h: tl.float64, scale_w: tl.float64, ALIGN: tl.constexpr, ACC: tl.constexpr,
                  BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    ps = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = ps < H * W
    sh, sw = tl.full([], scale_h, ACC), tl.full([], scale_w, ACC)
    src_lo = tl.load(stats_ptr + r * 4 + 0)
    src_span = tl.load(stats_ptr + r * 4 + 1)
    up_lo = tl.load(stats_ptr + r * 4 + 2)
    up_span = tl.load(stats_ptr + r * 4 + 3)
    constant = tl.load(const_ptr + r)
    n = r // K
    inside = tl.minimum(ps, H * W - 1)  # the tail recomputes the last pixel, stored nowhere
    m_ptr = act_ptr + n * act_stride_n + (r % K) * act_stride_k
    up = _upsampled(m_ptr, act_stride_h, act_stride_w, inside // W, inside % W, h, w, H, W, sh, sw, src_lo, src_span,
                    ALIGN, ACC)
    mask = tl.where(constant, 0.0, (up - up_lo) / up_span)
    out_row = out_ptr + r * C * H * W
    for c in range(C):
        v = tl.load(img_ptr + n * image_stride_n + c * image_stride_c + ps * image_stride_p, mask=ok, other=0.0).to(ACC)
        tl.store(out_row + c * H * W + ps, (mask * v).to(out_ptr.dtype.element_ty), mask=ok)


@torch.library.custom_op("camfast::score_cam_masks_triton", mutates_args=())
def score_cam_masks_triton(
    act: torch.Tensor, image: torch.Tensor, align_corners: bool, normalize_feature: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    check_score_cam_masks("camfast::score_cam_masks_triton", act, image, align_corners, normalize_feature)
    image = with_mergeable_hw(image)
    n, k, h, w = act.shape
    c, H, W = image.shape[1:]
    out = act.new_empty(n, k, c, H, W)
    constant = act.new_empty(n, k, dtype=torch.bool)
    if n * k == 0:
        return out, constant
    acc = torch.float64 if act.dtype == torch.float64 else torch.float32
    stats = act.new_empty(n * k, 4, dtype=acc)
    geometry = (h, w, H, W, _source_scale(h, H, align_corners, acc), _source_scale(w, W, align_corners, acc))
    _stats_kernel[(n * k,)](
        act, stats, constant, k, *act.stride(), *geometry,
        FEATURE=normalize_feature, ALIGN=align_corners, ACC=acc_dtype(act.dtype), SOURCE_BLOCK=SOURCE_BLOCK,
        BLOCK=BLOCK,
    )
    _masks_kernel[(n * k, triton.cdiv(H * W, BLOCK))](
        act, image, out, stats, constant, k, c, *act.stride(), *ncp_strides(image), *geometry,
        ALIGN=align_corners, ACC=acc_dtype(act.dtype), BLOCK=BLOCK,
    )
    return out, constant


register_score_cam_masks("_triton")
