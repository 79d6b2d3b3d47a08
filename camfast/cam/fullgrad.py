"""FullGrad (Srinivas and Fleuret, NeurIPS 2019), with grad-cam 1.5.7's terms and normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Explainer, class_gradients


def _bias_layers(model: nn.Module) -> list[nn.Module]:
    """grad-cam's FullGrad layers: every module whose type is exactly nn.Conv2d or nn.BatchNorm2d
    (no subclass, no 3-D) and that has a bias, in registration order."""
    return [m for m in model.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]


def _effective_bias(layer: nn.Module) -> torch.Tensor:
    """The bias a layer adds in eval mode: b for a convolution, beta - mu gamma / sqrt(var + eps) for BN."""
    if isinstance(layer, nn.BatchNorm2d):
        if layer.running_mean is None or layer.running_var is None:
            raise ValueError("FullGrad needs BatchNorm2d layers with running statistics (track_running_stats=True)")
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        return (layer.bias - layer.running_mean * scale).detach()
    return layer.bias.detach()


def _channel_scaled_sum(maps: torch.Tensor, size) -> torch.Tensor:
    """grad-cam's scale_accross_batch_and_channels, then the sum over channels: each [h, w] map
    becomes (m - min) / (max(m - min) + 1e-7), is resized to `size`, and the channels are added.
    Bilinear resizing is linear, so the channels are added first and resized once."""
    flat = maps.flatten(2)
    shifted = flat - flat.amin(2, keepdim=True)
    scaled = (shifted / (shifted.amax(2, keepdim=True) + 1e-7)).sum(1).view(maps.shape[0], *maps.shape[2:])
    if tuple(scaled.shape[-2:]) == tuple(size):
        return scaled
    return F.interpolate(scaled[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class FullGrad(Explainer):
    """FullGrad, as grad-cam 1.5.7 computes it, with g_l = dy_c/d(output of layer l):

        M = S(|dy_c/dx * x|) + sum_l S(|b_l * g_l|)

    where S normalises every (image, channel) map on its own, (m - min) / (max(m - min) + 1e-7),
    resizes it to the input (bilinear) and sums over the channels, and b_l is the bias of layer
    l (for BatchNorm2d in eval mode, beta - running_mean * gamma / sqrt(running_var + eps)). The
    layers are every nn.Conv2d and nn.BatchNorm2d with a bias (exact types, as grad-cam selects
    them); there is no target layer. One forward and one backward: each layer's term is reduced
    inside a hook on its own output as that output's gradient arrives, so every bias is paired
    with the gradient of the call that added it (grad-cam pairs them by registration order, which
    mis-pairs a module that is reused or registered out of execution order), and no gradient is
    kept after its term is taken.

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    >>> FullGrad(model)(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    needs_grad = True

    def __init__(self, model: nn.Module, *, score=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if score is not None and not callable(score):
            raise TypeError("score must be a callable (output, targets) -> Tensor[N] or [N, T], "
                            f"got {type(score).__name__}")
        self.model, self.score_fn = model, score
        self.target_layers, self.reshape_transform = [], None

    def _explain(self, x, targets):
        layers = _bias_layers(self.model)
        biases = {layer: _effective_bias(layer) for layer in layers}
        size = x.shape[2:]
        terms = []  # the layer terms of the class being backpropagated

        def add_term(layer, grad):
            terms.append(_channel_scaled_sum((biases[layer][:, None, None] * grad).abs(), size))

        def on_output(layer, inputs, output):
            if output.requires_grad:  # else the score does not depend on it: no term
                output.register_hook(lambda grad: add_term(layer, grad))

        handles = [layer.register_forward_hook(on_output) for layer in layers]
        try:
            image = x.requires_grad_(True)
            scores = self.scores(self.model(image), targets, x.shape[0])
            per_class = []
            for (input_grad,) in class_gradients(scores, [image], ["x"]):
                per_class.append(sum(terms, _channel_scaled_sum((input_grad * x.detach()).abs(), size)))
                terms.clear()
        finally:
            for handle in handles:
                handle.remove()
        return scores.shape_maps(torch.stack(per_class, 1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
