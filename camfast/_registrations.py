"""Fake (meta) kernels and autograd for every camfast:: op, one block per op stem.

Each `register_<stem>(suffix)` registers the forward op `camfast::<stem><suffix>` and its backward
op `camfast::_<stem>_backward<suffix>`: suffix "" for the compiled ops of camfast._C (registered at
import, below) and "_triton" for the Triton ops (registered by camfast/triton/<stem>.py). Both
backends share these fakes, so they must return the same shapes, dtypes and strides.
"""

from __future__ import annotations

import torch

from . import _extension
from ._layout import empty_nchw_like


def _camfast_op(name: str):
    return getattr(torch.ops.camfast, name)


def _forbid_double_backward(qualname: str) -> None:
    def backward(ctx, *grads):
        raise RuntimeError(f"{qualname}: double backward is not supported")

    torch.library.register_autograd(qualname, backward)


def register_thresholded_avg_pool2d(suffix: str) -> None:
    forward = f"camfast::thresholded_avg_pool2d{suffix}"
    backward_name = f"_thresholded_avg_pool2d_backward{suffix}"

    @torch.library.register_fake(forward)
    def _(x, tau):
        n, c = x.shape[:2]
        return x.new_empty(n, c), x.new_empty(n, c), x.new_empty(n, c, dtype=torch.int32)

    @torch.library.register_fake(f"camfast::{backward_name}")
    def _(grad_out, x, threshold, count):
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


def register_score_cam_masks(suffix: str) -> None:
    qualname = f"camfast::score_cam_masks{suffix}"

    @torch.library.register_fake(qualname)
    def _(act, image, align_corners, normalize_feature):
        n, k = act.shape[:2]
        return act.new_empty(n, k, *image.shape[1:]), act.new_empty(n, k, dtype=torch.bool)

    # The masks are explainer inputs: differentiating them is a mistake, reported as one.
    def backward(ctx, *grads):
        raise RuntimeError(f"{qualname} is not differentiable: its masks are inputs to score, not a loss")

    torch.library.register_autograd(qualname, backward)


REGISTRARS = (register_thresholded_avg_pool2d, register_score_cam_masks)

if _extension.has_cpp("cpu"):
    for _register in REGISTRARS:
        _register("")
