"""Fake (meta) kernels and autograd for every camfast:: op, one block per op stem, and the autocast
rule of the ops with several floating inputs (camfast/_precision.py).

Each `register_<stem>(suffix)` registers the forward op `camfast::<stem><suffix>` and its backward
op `camfast::_<stem>_backward<suffix>`: suffix "" for the compiled ops of camfast._C (registered at
import, below) and "_triton" for the Triton ops (registered by camfast/triton/<stem>.py). Both
backends share these fakes, so they must return the same shapes, dtypes and strides.

Each op's `check_<op>(qualname, *args)` asserts what its C++ contract (csrc/ops/<stem>.h) checks,
with the same messages: the fakes run it, and so do the Triton ops before any kernel.
"""

from __future__ import annotations

import math

import torch

from . import _extension
from ._checks import ANY, ArgCheck
from ._layout import empty_nchw_like
from ._precision import register_autocast
from .reference.weighted_channel_sum import METHODS


def _camfast_op(name: str):
    return getattr(torch.ops.camfast, name)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the statistics a forward saves: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _forbid_double_backward(qualname: str) -> None:
    def backward(ctx, *grads):
        raise RuntimeError(f"{qualname}: double backward is not supported")

    torch.library.register_autograd(qualname, backward)


def check_thresholded_avg_pool2d(op: str, x, tau) -> None:
    ArgCheck(op, x, "x", 4)


def check_thresholded_avg_pool2d_backward(op: str, grad_out, x, threshold, count) -> None:
    check = ArgCheck(op, x, "x", 4)
    n, c = x.shape[:2]
    check(grad_out, "grad_out", (n, c), (x.dtype,))
    check(threshold, "threshold", (n, c), (x.dtype,))
    check(count, "count", (n, c), (torch.int32,))


def register_thresholded_avg_pool2d(suffix: str) -> None:
    forward = f"camfast::thresholded_avg_pool2d{suffix}"
    backward_name = f"_thresholded_avg_pool2d_backward{suffix}"

    @torch.library.register_fake(forward)
    def _(x, tau):
        check_thresholded_avg_pool2d(forward, x, tau)
        n, c = x.shape[:2]
        return x.new_empty(n, c), x.new_empty(n, c), x.new_empty(n, c, dtype=torch.int32)

    @torch.library.register_fake(f"camfast::{backward_name}")
    def _(grad_out, x, threshold, count):
        check_thresholded_avg_pool2d_backward(f"camfast::{backward_name}", grad_out, x, threshold, count)
        return empty_nchw_like(x)

    def setup_context(ctx, inputs, output):
        x, _tau = inputs
        _, threshold, count = output
        ctx.mark_non_differentiable(threshold, count)
        ctx.save_for_backward(x, threshold, count)

    def backward(ctx, grad_out, _grad_threshold, _grad_count):
        x, threshold, count = ctx.saved_tensors
        return _camfast_op(backward_name)(grad_out, x, threshold, count), None

    torch.library.register_autograd(forward, backward, setup_context=setup_context)
    _forbid_double_backward(f"camfast::{backward_name}")


def check_score_cam_masks(op: str, act, image, align_corners, normalize_feature) -> None:
    # The image's size, channels included, is free: masks are upsampled to it.
    ArgCheck(op, act, "act", 4)(image, "image", (act.shape[0], ANY, ANY, ANY), (act.dtype,))
    # Every output pixel reads its taps from the map: an empty map has none to read.
    torch._check(act.shape[2] > 0 and act.shape[3] > 0, lambda: f"{op}: act must have h > 0 and w > 0")


def register_score_cam_masks(suffix: str) -> None:
    qualname = f"camfast::score_cam_masks{suffix}"

    @torch.library.register_fake(qualname)
    def _(act, image, align_corners, normalize_feature):
        check_score_cam_masks(qualname, act, image, align_corners, normalize_feature)
        n, k = act.shape[:2]
        return act.new_empty(n, k, *image.shape[1:]), act.new_empty(n, k, dtype=torch.bool)

    # The masks are explainer inputs: differentiating them is a mistake, reported as one.
    def backward(ctx, *grads):
        raise RuntimeError(f"{qualname} is not differentiable: its masks are inputs to score, not a loss")

    torch.library.register_autograd(qualname, backward)
    register_autocast(qualname)


def check_weighted_channel_sum(op: str, act, grad, method, eps) -> None:
    check = ArgCheck(op, act, "act", 4)
    torch._check(grad.dim() in (4, 5),
                 lambda: f"{op}: grad must be 4-D [N, K, h, w] or 5-D [T, N, K, h, w], got {grad.dim()}-D")
    check(grad, "grad", (*(ANY,) * (grad.dim() - 4), *act.shape), (act.dtype,))
    torch._check(act.shape[2] > 0 and act.shape[3] > 0, lambda: f"{op}: act must have h > 0 and w > 0")
    torch._check(eps >= 0, lambda: f"{op}: eps must lie in [0, inf], got {eps}")  # NaN fails too
    torch._check(method in METHODS, lambda: f"{op}: method must be one of {', '.join(METHODS)}; got '{method}'")


def register_weighted_channel_sum(suffix: str) -> None:
    qualname = f"camfast::weighted_channel_sum{suffix}"

    @torch.library.register_fake(qualname)
    def _(act, grad, method, eps):
        check_weighted_channel_sum(qualname, act, grad, method, eps)
        return act.new_empty(*grad.shape[:-3], *act.shape[2:])

    # The map is an explainer's output, computed from detached activations and gradients.
    def backward(ctx, *grads):
        raise RuntimeError(f"{qualname} is not differentiable: it computes an explainer's output")

    torch.library.register_autograd(qualname, backward)
    register_autocast(qualname)


def _check_drop(check: ArgCheck, drop, n) -> None:
    check(drop, "drop", (n,), (torch.bool, torch.uint8))


def check_adl(op: str, x, drop, threshold) -> None:
    _check_drop(ArgCheck(op, x, "x", 4), drop, x.shape[0])


def check_adl_backward(op: str, grad_out, x, selected, drop) -> None:
    check = ArgCheck(op, x, "x", 4)
    n, _, h, w = x.shape
    check(grad_out, "grad_out", x.shape, (x.dtype,))
    check(selected, "selected", (n, 1, h, w), (x.dtype,))
    _check_drop(check, drop, n)


def register_adl(suffix: str) -> None:
    forward = f"camfast::adl{suffix}"
    backward_name = f"_adl_backward{suffix}"

    @torch.library.register_fake(forward)
    def _(x, drop, threshold):
        check_adl(forward, x, drop, threshold)
        n, _, h, w = x.shape
        return empty_nchw_like(x), x.new_empty(n, 1, h, w)

    @torch.library.register_fake(f"camfast::{backward_name}")
    def _(grad_out, x, selected, drop):
        check_adl_backward(f"camfast::{backward_name}", grad_out, x, selected, drop)
        return empty_nchw_like(x)

    def setup_context(ctx, inputs, output):
        x, drop, _threshold = inputs
        _, selected = output
        ctx.mark_non_differentiable(selected)
        # The selected map is all the backward needs besides x: the mask itself in the drop
        # branch, s = sigmoid(a) in the importance branch.
        ctx.save_for_backward(x, selected, drop)

    def backward(ctx, grad_out, _grad_selected):
        x, selected, drop = ctx.saved_tensors
        return _camfast_op(backward_name)(grad_out, x, selected, drop), None, None

    torch.library.register_autograd(forward, backward, setup_context=setup_context)
    _forbid_double_backward(f"camfast::{backward_name}")


def check_channel_spatial_attention(op: str, a, s, softmax) -> ArgCheck:
    return ArgCheck(op, a, "a", 4)(s, "s", a.shape[:2], (a.dtype,))


def check_channel_spatial_attention_backward(op: str, grad_out, a, s, t, softmax) -> None:
    check = check_channel_spatial_attention(op, a, s, softmax)
    n, _, h, w = a.shape
    check(grad_out, "grad_out", a.shape, (a.dtype,))
    check(t, "t", (n, 1, h, w), (acc_dtype(a.dtype),))


def register_channel_spatial_attention(suffix: str) -> None:
    forward = f"camfast::channel_spatial_attention{suffix}"
    backward_name = f"_channel_spatial_attention_backward{suffix}"

    @torch.library.register_fake(forward)
    def _(a, s, softmax):
        check_channel_spatial_attention(forward, a, s, softmax)
        n, _, h, w = a.shape
        return empty_nchw_like(a), a.new_empty(n, 1, h, w, dtype=acc_dtype(a.dtype))

    @torch.library.register_fake(f"camfast::{backward_name}")
    def _(grad_out, a, s, t, softmax):
        check_channel_spatial_attention_backward(f"camfast::{backward_name}", grad_out, a, s, t, softmax)
        return empty_nchw_like(a), s.new_empty(a.shape[:2])

    def setup_context(ctx, inputs, output):
        a, s, ctx.softmax = inputs
        _, t = output
        ctx.mark_non_differentiable(t)
        ctx.save_for_backward(a, s, t)

    def backward(ctx, grad_out, _grad_t):
        a, s, t = ctx.saved_tensors
        grad_a, grad_s = _camfast_op(backward_name)(grad_out, a, s, t, ctx.softmax)
        return grad_a, grad_s, None

    torch.library.register_autograd(forward, backward, setup_context=setup_context)
    register_autocast(forward)
    _forbid_double_backward(f"camfast::{backward_name}")


def check_attention_branch_mix(op: str, g, m) -> ArgCheck:
    check = ArgCheck(op, g, "g", 4)
    n, _, h, w = g.shape
    return check(m, "m", (n, 1, h, w), (g.dtype,))


def check_attention_branch_mix_backward(op: str, grad_out, g, m) -> None:
    check_attention_branch_mix(op, g, m)(grad_out, "grad_out", g.shape, (g.dtype,))


def register_attention_branch_mix(suffix: str) -> None:
    forward = f"camfast::attention_branch_mix{suffix}"
    backward_name = f"_attention_branch_mix_backward{suffix}"

    @torch.library.register_fake(forward)
    def _(g, m):
        check_attention_branch_mix(forward, g, m)
        return empty_nchw_like(g)

    @torch.library.register_fake(f"camfast::{backward_name}")
    def _(grad_out, g, m):
        check_attention_branch_mix_backward(f"camfast::{backward_name}", grad_out, g, m)
        return empty_nchw_like(g), m.new_empty(m.shape)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_out):
        g, m = ctx.saved_tensors
        return _camfast_op(backward_name)(grad_out, g, m)

    torch.library.register_autograd(forward, backward, setup_context=setup_context)
    register_autocast(forward)
    _forbid_double_backward(f"camfast::{backward_name}")


def row_stats_like(x):
    """Empty row max and row sum, [N, C] in the accumulation dtype (float64 only for float64 x)."""
    n, c = x.shape[:2]
    return x.new_empty(n, c, dtype=acc_dtype(x.dtype)), x.new_empty(n, c, dtype=acc_dtype(x.dtype))


def _check_temperature(op: str, temperature) -> None:
    torch._check(temperature > 0 and math.isfinite(temperature),
                 lambda: f"{op}: temperature must be a finite number > 0, got {temperature}")


def _check_row_stats(check: ArgCheck, x, row_max, row_sum) -> None:
    for stat, name in ((row_max, "row_max"), (row_sum, "row_sum")):
        check(stat, name, x.shape[:2], (acc_dtype(x.dtype),))


def check_spatial_softmax2d(op: str, x, temperature) -> None:
    ArgCheck(op, x, "x", 4)
    _check_temperature(op, temperature)


def check_spatial_softmax2d_backward(op: str, grad_out, x, row_max, row_sum, temperature) -> None:
    check = ArgCheck(op, x, "x", 4)
    check(grad_out, "grad_out", x.shape, (x.dtype,))
    _check_row_stats(check, x, row_max, row_sum)
    _check_temperature(op, temperature)


def check_spatial_soft_argmax2d(op: str, x, temperature, normalized_coordinates) -> None:
    check_spatial_softmax2d(op, x, temperature)


def check_spatial_soft_argmax2d_backward(op: str, grad_out, x, out, row_max, row_sum, temperature,
                                         normalized_coordinates) -> None:
    check = ArgCheck(op, x, "x", 4)
    coordinates = (*x.shape[:2], 2)
    check(grad_out, "grad_out", coordinates, (acc_dtype(x.dtype),))
    check(out, "out", coordinates, (acc_dtype(x.dtype),))
    _check_row_stats(check, x, row_max, row_sum)
    _check_temperature(op, temperature)


def register_spatial_softmax2d(suffix: str) -> None:
    """camfast::spatial_softmax2d and camfast::spatial_soft_argmax2d: both save x and the row
    statistics (max of x / T, sum of exp(x / T - max)) and recompute the softmax in backward."""
    softmax = f"camfast::spatial_softmax2d{suffix}"
    softmax_backward = f"_spatial_softmax2d_backward{suffix}"
    argmax = f"camfast::spatial_soft_argmax2d{suffix}"
    argmax_backward = f"_spatial_soft_argmax2d_backward{suffix}"

    @torch.library.register_fake(softmax)
    def _(x, temperature):
        check_spatial_softmax2d(softmax, x, temperature)
        return (empty_nchw_like(x), *row_stats_like(x))

    @torch.library.register_fake(f"camfast::{softmax_backward}")
    def _(grad_out, x, row_max, row_sum, temperature):
        check_spatial_softmax2d_backward(f"camfast::{softmax_backward}", grad_out, x, row_max, row_sum, temperature)
        return empty_nchw_like(x)

    @torch.library.register_fake(argmax)
    def _(x, temperature, normalized_coordinates):
        check_spatial_soft_argmax2d(argmax, x, temperature, normalized_coordinates)
        row_max, row_sum = row_stats_like(x)
        return row_max.new_empty(*x.shape[:2], 2), row_max, row_sum

    @torch.library.register_fake(f"camfast::{argmax_backward}")
    def _(grad_out, x, out, row_max, row_sum, temperature, normalized_coordinates):
        check_spatial_soft_argmax2d_backward(f"camfast::{argmax_backward}", grad_out, x, out, row_max, row_sum,
                                             temperature, normalized_coordinates)
        return empty_nchw_like(x)

    def save_softmax(ctx, inputs, output):
        x, ctx.temperature = inputs
        _, row_max, row_sum = output
        ctx.mark_non_differentiable(row_max, row_sum)
        ctx.save_for_backward(x, row_max, row_sum)

    def backward_softmax(ctx, grad_out, _grad_max, _grad_sum):
        x, row_max, row_sum = ctx.saved_tensors
        return _camfast_op(softmax_backward)(grad_out, x, row_max, row_sum, ctx.temperature), None

    def save_argmax(ctx, inputs, output):
        x, ctx.temperature, ctx.normalized = inputs
        out, row_max, row_sum = output
        ctx.mark_non_differentiable(row_max, row_sum)
        ctx.save_for_backward(x, out, row_max, row_sum)

    def backward_argmax(ctx, grad_out, _grad_max, _grad_sum):
        x, out, row_max, row_sum = ctx.saved_tensors
        grad_x = _camfast_op(argmax_backward)(grad_out, x, out, row_max, row_sum, ctx.temperature, ctx.normalized)
        return grad_x, None, None

    torch.library.register_autograd(softmax, backward_softmax, setup_context=save_softmax)
    torch.library.register_autograd(argmax, backward_argmax, setup_context=save_argmax)
    _forbid_double_backward(f"camfast::{softmax_backward}")
    _forbid_double_backward(f"camfast::{argmax_backward}")


def check_wsol_box_sweep(op: str, q, gt_boxes, gt_count, multi_contour) -> None:
    check = ArgCheck(op, q, "q", 3, (torch.uint8,))
    b, h, w = q.shape
    check(gt_boxes, "gt_boxes", (b, ANY, 4), (torch.int64,))
    check(gt_count, "gt_count", (b,), (torch.int64,))
    torch._check(h < 2**15 and w < 2**15, lambda: f"{op}: maps of 2^15 rows or columns or more are not supported")


def register_wsol_box_sweep(suffix: str) -> None:
    """The MaxBoxAcc sweep of camfast.wsol: integer and boolean inputs, nothing to differentiate."""

    qualname = f"camfast::wsol_box_sweep{suffix}"

    @torch.library.register_fake(qualname)
    def _(q, gt_boxes, gt_count, multi_contour):
        check_wsol_box_sweep(qualname, q, gt_boxes, gt_count, multi_contour)
        levels = (q.shape[0], 256)
        return q.new_empty(levels, dtype=torch.float64), q.new_empty(levels, dtype=torch.bool)


def check_road_impute(op: str, images, unknown, rtol, max_iter) -> None:
    check = ArgCheck(op, images, "images", 4, (torch.float64,))
    b, _, h, w = images.shape
    check(unknown, "unknown", (b, h, w), (torch.bool,))


def register_road_impute(suffix: str) -> None:
    """ROAD's imputation solve of camfast.metrics: not differentiated (the metrics run without grad)."""

    qualname = f"camfast::road_impute{suffix}"

    @torch.library.register_fake(qualname)
    def _(images, unknown, rtol, max_iter):
        check_road_impute(qualname, images, unknown, rtol, max_iter)
        return torch.empty_like(images, memory_format=torch.contiguous_format)


REGISTRARS = (
    register_adl,
    register_attention_branch_mix,
    register_channel_spatial_attention,
    register_score_cam_masks,
    register_spatial_softmax2d,
    register_thresholded_avg_pool2d,
    register_weighted_channel_sum,
    register_wsol_box_sweep,
    register_road_impute,
)

if _extension.has_cpp("cpu"):
    for _register in REGISTRARS:
        _register("")
