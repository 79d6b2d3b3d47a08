"""The raw map of the gradient CAM methods, the executable specification.

Per layer, with A = act [N, K, h, w] and g = d score / dA (one class: [N, K, h, w]; T classes:
[T, N, K, h, w]), written as the methods' sources compute them:
grad-cam 1.5.7's `grad_cam.py`, `grad_cam_plusplus.py`, `hirescam.py:16-31`,
`grad_cam_elementwise.py:23-28`, `xgrad_cam.py:18-32` and `layer_cam.py:21-34`, and torchcam 0.5.0's
`methods/gradient.py`.
"""

from __future__ import annotations

import torch

# Methods whose map is sum_k w_k A_k, with w_k from per-channel spatial statistics.
WEIGHTED = ("grad-cam", "xgrad-cam", "grad-cam++", "grad-cam++/grad-cam")
# Methods whose map is sum_k phi(g_k, A_k), element by element.
ELEMENTWISE = ("hires-cam", "element-wise", "layer-cam")
METHODS = WEIGHTED + ELEMENTWISE
# The epsilon grad-cam's XGradCAM adds to sum A (torchcam's is 1e-8).
XGRAD_EPS = 1e-7


def _grad_cam_pp_weights(act: torch.Tensor, grad: torch.Tensor, official: bool) -> torch.Tensor:
    """Grad-CAM++: the authors' alpha (normalised per channel) or grad-cam's (+1e-6, 0 where g == 0)."""
    g2 = grad * grad
    spatial_sum = act.sum((-2, -1), keepdim=True)
    if official:
        denom = 2 * g2 + spatial_sum * g2 * grad
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        total = alpha.sum((-2, -1), keepdim=True)
        alpha = alpha / torch.where(total != 0, total, torch.ones_like(total))
    else:
        alpha = g2 / (2 * g2 + spatial_sum * g2 * grad + 1e-6)
        alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grad.relu()).sum((-2, -1))


def channel_weights(act: torch.Tensor, grad: torch.Tensor, method: str, eps: float = XGRAD_EPS) -> torch.Tensor:
    """w [..., N, K] of a weighted method (act broadcasts against grad's leading class axis)."""
    if method == "grad-cam":
        return grad.mean((-2, -1))
    if method == "xgrad-cam":
        return (grad * act).sum((-2, -1)) / (act.sum((-2, -1)) + eps)
    return _grad_cam_pp_weights(act, grad, official=method == "grad-cam++")


def weighted_channel_sum(act: torch.Tensor, grad: torch.Tensor, method: str = "grad-cam",
                         eps: float = XGRAD_EPS) -> torch.Tensor:
    """ReLU of the channel sum of a gradient CAM method: [N, h, w], or [T, N, h, w] for a 5-D grad.

        grad-cam:             w_k = mean_ij g_k                        map = ReLU(sum_k w_k A_k)
        xgrad-cam:            w_k = sum_ij g_k A_k / (sum_ij A_k + eps)  (grad-cam 1e-7, torchcam 1e-8)
        grad-cam++:           w_k = sum_ij alpha ReLU(g_k), alpha the authors' (normalised per channel)
        grad-cam++/grad-cam:  the same with grad-cam's alpha (see camfast.cam.GradCAMPlusPlus)
        hires-cam:            map = ReLU(sum_k g_k A_k)
        element-wise:         map = ReLU(sum_k ReLU(g_k A_k))
        layer-cam:            map = ReLU(sum_k ReLU(g_k) A_k)

    Example:
        >>> import torch, camfast
        >>> act, grad = torch.rand(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
        >>> ref = camfast.reference.weighted_channel_sum(act, grad, "layer-cam")
        >>> torch.allclose(ref, camfast.weighted_channel_sum(act, grad, "layer-cam"))
        True
    """
    if method in WEIGHTED:
        raw = (channel_weights(act, grad, method, eps)[..., None, None] * act).sum(-3)
    elif method == "hires-cam":
        raw = (grad * act).sum(-3)
    elif method == "element-wise":
        raw = (grad * act).relu().sum(-3)
    elif method == "layer-cam":
        raw = (grad.relu() * act).sum(-3)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return raw.relu()
