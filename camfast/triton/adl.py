"""Attention-based dropout in Triton.

Forward: per-pixel channel sums give each sample's map (sigmoid of the mean, or the mean itself
in the drop branch), one program per drop sample turns its mean into the mask, and a last kernel
scales x. Backward reuses the sums (of g * x, for the importance branch) and the scaling kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import channels_inner, empty_nchw_like, ncp_strides, output_memory_format, with_mergeable_hw
from .._registrations import check_adl, check_adl_backward, register_adl
from ._utils import SUM, acc_dtype, pixel_tiles, round_to, row_tiles, tile_sum


@triton.jit
def _channel_sums_kernel(x_ptr, y_ptr, drop_ptr, sel_ptr, shift_ptr, C, P,
                         x_stride_n, x_stride_c, x_stride_p, y_stride_n, y_stride_c, y_stride_p,
                         BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Forward: sel = mean over C of x (drop branch) or its sigmoid. Backward (y = grad_out):
    shift = s (1 - s) / C * sum over C of y * x in the importance branch, 0 in the drop branch."""
    n = tl.program_id(0).to(tl.int64)
    ps = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = ps < P
    drop = tl.load(drop_ptr + n) != 0
    x_pixels = x_ptr + n * x_stride_n + ps.to(tl.int64)[None, :] * x_stride_p
    y_pixels = y_ptr + n * y_stride_n + ps.to(tl.int64)[None, :] * y_stride_p
    total = tl.zeros([BLOCK_P], SUM)
    for c0 in range(0, C, BLOCK_C):
        cs = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        ok = (cs < C)[:, None] & p_ok[None, :]
        if BACKWARD:  # the drop branch's gradient needs no sums
            ok = ok & ~drop
        v = tl.load(x_pixels + cs[:, None] * x_stride_c, mask=ok, other=0.0).to(ACC)
        if BACKWARD:
            g = tl.load(y_pixels + cs[:, None] * y_stride_c, mask=ok, other=0.0)
            v *= g.to(ACC)
        total += tile_sum(v, 0)
    map_ptrs = sel_ptr + n * P + ps
    if BACKWARD:
        s = tl.load(map_ptrs, mask=p_ok).to(ACC)
        shift = tl.where(drop, 0.0, s * (1.0 - s) * (total / C).to(ACC))
        tl.store(shift_ptr + n * P + ps, shift, mask=p_ok)
    else:
        # Rounded to the input dtype, as torch.mean and torch.sigmoid round (the drop mask
        # compares a, so its rounding must be torch's: see round_to).
        a = round_to((total / C).to(ACC), sel_ptr.dtype.element_ty)
        s = (1.0 / (1.0 + tl.exp(-a.to(ACC)))).to(sel_ptr.dtype.element_ty)
        tl.store(map_ptrs, tl.where(drop, a, s), mask=p_ok)


@triton.jit
def _drop_mask_kernel(sel_ptr, drop_ptr, P, ratio: tl.float64, ACC: tl.constexpr, BLOCK_P: tl.constexpr):
    """For a drop sample, replaces its mean map a by [a < ratio * max(a)] (NaN-propagating max)."""
    n = tl.program_id(0).to(tl.int64)
    drop = tl.load(drop_ptr + n) != 0
    row = sel_ptr + n * P
    # tl.max drops NaN, so it is tracked beside the maximum.
    top = tl.full([BLOCK_P], float("-inf"), ACC)
    has_nan = tl.zeros([BLOCK_P], tl.int32)
    for p0 in range(0, P, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        a = tl.load(row + ps, mask=(ps < P) & drop, other=float("-inf")).to(ACC)
        has_nan = tl.maximum(has_nan, (a != a).to(tl.int32))
        top = tl.maximum(top, tl.where(a != a, float("-inf"), a))
    top_all = tl.where(tl.max(has_nan, axis=0) > 0, float("nan"), tl.max(top, axis=0))
    # Rounded to the input dtype like torch's `amax * threshold`. (tl.full casts the float64
    # ratio to ACC; the interpreter passes it as a Python float.)
    t = round_to(top_all * tl.full([BLOCK_P], ratio, ACC), sel_ptr.dtype.element_ty).to(ACC)
    for p0 in range(0, P, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        ok = (ps < P) & drop
        a = tl.load(row + ps, mask=ok).to(ACC)
        tl.store(row + ps, tl.where(a < t, 1.0, 0.0).to(sel_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _scale_kernel(x_ptr, sel_ptr, shift_ptr, out_ptr, C, P,
                  x_stride_n, x_stride_c, x_stride_p, out_stride_n, out_stride_c, out_stride_p,
                  HAS_SHIFT: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out = x * sel (+ shift), sel and shift per pixel, broadcast over channels."""
    n = tl.program_id(0).to(tl.int64)
    cs = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    ps = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = ps < P
    ok = (cs < C)[:, None] & p_ok[None, :]
    pp = ps.to(tl.int64)[None, :]
    v = tl.load(x_ptr + n * x_stride_n + cs[:, None] * x_stride_c + pp * x_stride_p, mask=ok).to(ACC)
    out = v * tl.load(sel_ptr + n * P + ps, mask=p_ok).to(ACC)[None, :]
    if HAS_SHIFT:
        out += tl.load(shift_ptr + n * P + ps, mask=p_ok)[None, :]
    tl.store(out_ptr + n * out_stride_n + cs[:, None] * out_stride_c + pp * out_stride_p, out, mask=ok)


def _scale(x, sel, shift, out, block_c, block_p):
    c, p = x.shape[1], x.shape[2] * x.shape[3]
    _scale_kernel[(x.shape[0], triton.cdiv(c, block_c), triton.cdiv(p, block_p))](
        x, sel, shift, out, c, p, *ncp_strides(x), *ncp_strides(out),
        HAS_SHIFT=shift is not None, ACC=acc_dtype(x.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
    )


def _flags(drop: torch.Tensor) -> torch.Tensor:
    return drop.contiguous().view(torch.uint8)


@torch.library.custom_op("camfast::adl_triton", mutates_args=())
def adl_triton(x: torch.Tensor, drop: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    check_adl("camfast::adl_triton", x, drop, threshold)
    x = with_mergeable_hw(x)
    n, c, h, w = x.shape
    out, sel = empty_nchw_like(x), x.new_empty(n, 1, h, w)
    if n * h * w:
        flags, acc = _flags(drop), acc_dtype(x.dtype)
        block_c, block_p = pixel_tiles(x)
        _channel_sums_kernel[(n, triton.cdiv(h * w, block_p))](
            x, x, flags, sel, sel, c, h * w, *ncp_strides(x), *ncp_strides(x),
            BACKWARD=False, ACC=acc, BLOCK_C=block_c, BLOCK_P=block_p,
        )
        _drop_mask_kernel[(n,)](sel, flags, h * w, threshold, ACC=acc, BLOCK_P=min(1024, triton.next_power_of_2(h * w)))
        if c:
            _scale(x, sel, None, out, *row_tiles(x))
    return out, sel


@torch.library.custom_op("camfast::_adl_backward_triton", mutates_args=())
def adl_backward_triton(
    grad_out: torch.Tensor, x: torch.Tensor, selected: torch.Tensor, drop: torch.Tensor
) -> torch.Tensor:
    check_adl_backward("camfast::_adl_backward_triton", grad_out, x, selected, drop)
    x, grad_out, sel = with_mergeable_hw(x), with_mergeable_hw(grad_out), selected.contiguous()
    if channels_inner(grad_out) != channels_inner(x):  # read in x's order, as the C++ kernels do
        grad_out = grad_out.contiguous(memory_format=output_memory_format(x))
    grad_x = empty_nchw_like(x)
    if x.numel():
        n, c, h, w = x.shape
        acc = acc_dtype(x.dtype)
        shift = torch.empty(n, h * w, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                            device=x.device)
        block_c, block_p = pixel_tiles(x)
        _channel_sums_kernel[(n, triton.cdiv(h * w, block_p))](
            x, grad_out, _flags(drop), sel, shift, c, h * w, *ncp_strides(x), *ncp_strides(grad_out),
            BACKWARD=True, ACC=acc, BLOCK_C=block_c, BLOCK_P=block_p,
        )
        _scale(grad_out, sel, shift, grad_x, *row_tiles(x))
    return grad_x


register_adl("_triton")
