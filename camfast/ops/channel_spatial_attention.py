"""GGAM's channel-spatial attention and its attention loss, the public functions."""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._precision import promoted
from .._validation import check_choice, check_float_tensor, check_nchw, check_same_device, check_shape

SPATIAL = ("sigmoid", "softmax")


def _weights(s, name: str, shape=None, meaning: str = "") -> torch.Tensor:
    """s as Tensor[N, C], accepting the [N, C, 1, 1] a 1x1 conv produces (a view, no copy)."""
    if isinstance(s, torch.Tensor) and s.dim() == 4 and s.shape[2:] == (1, 1):
        s = s[:, :, 0, 0]
    check_float_tensor(s, name, 2, "[N, C] (or [N, C, 1, 1])")
    if shape is not None:
        check_shape(s, name, tuple(shape), meaning)
    return s


def channel_spatial_attention(
    a: torch.Tensor, s: torch.Tensor, spatial: str = "sigmoid", *, backend: str | None = None
) -> torch.Tensor:
    """Spatial attention from channel-weighted activations, applied to the activations (GGAM).

    Xu et al., "Grad-CAM Guided Channel-Spatial Attention Module for Fine-Grained Visual
    Classification", arXiv 2101.09666. Per sample, with z[h, w] = sum_c s[c] * a[c, h, w]:
    t = sigmoid(z) (the authors' GGAM code) or the softmax of z over the H*W map
    (spatial="softmax", their spatial-attention baselines), and out = a * t broadcast over C.

    Gradients reach a and s, with r = sum_c grad[c] * a[c] and u = t * (1 - t) * r (sigmoid) or
    u = t * (r - sum_hw t * r) (softmax): grad_a = grad * t + s * u, grad_s = sum_hw u * a.

    Args:
        a: Tensor[N, C, H, W], any strides (NCHW, channels_last and sliced are read in place).
        s: channel attention Tensor[N, C] or [N, C, 1, 1], any strides, on a's device.
        spatial: "sigmoid" or "softmax".
        backend: None/"auto", "cpp", "triton" or "reference" (see camfast.show_config()).

    Returns:
        Tensor[N, C, H, W], channels_last when a is, in the dtype torch's type promotion gives a
        and s (under torch.autocast: the autocast dtype, float64 inputs excepted).

    Example:
        >>> import torch, camfast
        >>> a = torch.ones(1, 2, 2, 2)
        >>> s = torch.tensor([[0.5, 0.5]])            # z = 1 everywhere, sigmoid(1) = 0.7311
        >>> camfast.channel_spatial_attention(a, s)[0, 0]
        tensor([[0.7311, 0.7311],
                [0.7311, 0.7311]])
        >>> camfast.channel_spatial_attention(a, s, spatial="softmax")[0, 0]   # uniform over 4 pixels
        tensor([[0.2500, 0.2500],
                [0.2500, 0.2500]])
    """
    check_nchw(a, "a")
    s = _weights(s, "s", a.shape[:2], "[N, C] of a")
    check_same_device({"a": a, "s": s})
    a, s = promoted(a, s)
    check_choice(spatial, "spatial", SPATIAL)
    chosen = _backend.choose(backend, a, s)
    if chosen == "reference":
        return reference.channel_spatial_attention(a, s, spatial)
    return _backend.run("channel_spatial_attention", chosen, a, s, spatial == "softmax")[0]


def ggam_loss(
    s: torch.Tensor, grad_weights: torch.Tensor, symmetric: bool = False, sigmoid: bool = False
) -> torch.Tensor:
    """GGAM's attention loss between channel attention s and Grad-CAM weights, summed over N and C.

    As in the authors' code: q = softmax over channels of grad_weights (detached), and
    loss = sum_{n,c} s * (log s - log q) = KL(s || q), with the gradient reaching s.
    sigmoid=True takes q = sigmoid(grad_weights) and symmetric=True adds KL(q || s): the form
    commonly quoted from the paper.

    Args:
        s: channel attention Tensor[N, C] or [N, C, 1, 1] (a softmax over C).
        grad_weights: Grad-CAM weights (spatial means of the gradients), the same shape as s.

    Returns:
        A scalar tensor in the dtype of s and grad_weights promoted (float32 under CPU autocast,
        which runs kl_div in float32).

    Example:
        >>> import torch, camfast
        >>> s = torch.tensor([[0.5, 0.5]], requires_grad=True)
        >>> camfast.ggam_loss(s, torch.zeros(1, 2))                # q = softmax(0, 0) = s
        tensor(0., grad_fn=<...>)
        >>> camfast.ggam_loss(s, torch.tensor([[0.0, 1.0]])) > 0   # q leans to channel 1
        tensor(True)
    """
    s = _weights(s, "s")
    grad_weights = _weights(grad_weights, "grad_weights", s.shape, "[N, C] of s")
    check_same_device({"s": s, "grad_weights": grad_weights})
    s, grad_weights = promoted(s, grad_weights)
    g = grad_weights.detach()
    q = torch.sigmoid(g) if sigmoid else torch.softmax(g, dim=1)
    loss = torch.nn.functional.kl_div(q.log(), s, reduction="sum")
    if symmetric:
        loss = loss + torch.nn.functional.kl_div(s.log(), q, reduction="sum")
    return loss
