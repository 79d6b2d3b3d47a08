"""CAM from the classifier weights, Grad-CAM and Grad-CAM++."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_choice
from ._base import Explainer, Scores, check_fuse, class_gradients, fuse_layers, layer_name, resolve_layer


def _classifier_weight(model: nn.Module, fc: nn.Module | str | None) -> torch.Tensor:
    """The [classes, K] weight of the classifier: `fc` (Linear or 1x1 conv), or the model's only Linear."""
    if fc is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if len(linears) != 1:
            raise ValueError(f"fc must be given: the model holds {len(linears)} nn.Linear layers, not exactly one")
        fc = linears[0]
    fc = resolve_layer(model, fc, "fc")
    weight = getattr(fc, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4) or weight.shape[2:] not in ((), (1, 1)):
        raise TypeError("fc must be an nn.Linear or a 1x1 convolution")
    return weight.detach().flatten(1)


class CAM(Explainer):
    """Class activation map (Zhou et al., CVPR 2016): M_c = sum_k W[c, k] A_k.

    W is the classifier's weight (no bias), A the target layer's activation; `fc` names the
    classifier (default: the model's only nn.Linear), whose inputs must be the K channels of A
    after global pooling. The authors' code applies no ReLU (`relu=False`), nor does torchcam
    0.5.0's code (its docstring shows one). `nwc=True` clamps W to max(W, 0) (negative weight clamping, Bae et al. 2020).

    Example:
        >>> import torch
        >>> from camfast.cam import CAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> maps = CAM(model, model[1])(torch.rand(2, 3, 16, 16), targets=[0, 4])  # the only nn.Linear's weights
        >>> maps.shape, bool(maps.min() >= 0), bool(maps.max() <= 1)
        (torch.Size([2, 16, 16]), True, True)
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, fc: nn.Module | str | None = None,
                 nwc: bool = False, relu: bool = False, reshape_transform=None):
        super().__init__(model, target_layer, reshape_transform=reshape_transform)
        self.fc = fc
        self.nwc, self.relu = bool(nwc), bool(relu)
        _classifier_weight(model, fc)  # fail at construction on a bad fc

    def _explain(self, x, targets):
        logits, (act,) = self.forward(x)
        weight = _classifier_weight(self.model, self.fc)
        if weight.shape[1] != act.shape[1]:
            raise ValueError(f"fc takes {weight.shape[1]} features but target_layer outputs {act.shape[1]} channels")
        scores = self.scores(logits, targets, x.shape[0])
        w = weight[scores.classes].to(act.dtype)
        if self.nwc:
            w = w.clamp_min(0)
        cam = torch.einsum("ntk,nkhw->nthw", w, act)
        return scores.shape_maps(cam.relu() if self.relu else cam)


class _GradientCAM(Explainer):
    """Shared by the gradient methods: one forward, then per class the gradients of the score
    with respect to every target layer (torch.autograd.grad only: no parameter's .grad is
    touched), a raw map per layer, and the layers fused by `fuse` ("mean": grad-cam's rule,
    "max": torchcam's; see camfast.cam._base.fuse_layers)."""

    needs_grad = True
    max_layers = None

    def __init__(self, model: nn.Module, target_layer, *, fuse: str = "mean", score=None, reshape_transform=None):
        super().__init__(model, target_layer, score=score, reshape_transform=reshape_transform)
        self.fuse = check_fuse(fuse)

    def _explain(self, x, targets):
        scores, per_class = self.layer_maps(x, targets)
        return scores.shape_maps(torch.stack([fuse_layers(maps, x.shape[2:], self.fuse) for maps in per_class], 1))

    def layer_maps(self, x, targets) -> tuple[Scores, list[list[torch.Tensor]]]:
        """(the scores, per class the raw map [N, h, w] of every target layer), from one forward."""
        output, acts = self.forward(x, grad=True)
        scores = self.scores(output, targets, x.shape[0])
        names = [layer_name(self.model, layer) for layer in self.target_layers]
        values = [a.detach() for a in acts]
        return scores, [[self.layer_map(a, g) for a, g in zip(values, grads)]
                        for grads in class_gradients(scores, acts, names)]

    def layer_map(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The raw map [N, h, w] of one layer: ReLU(sum_k w_k A_k) with the method's weights."""
        return torch.einsum("nk,nkhw->nhw", self.channel_weights(act, grad), act).relu()

    def channel_weights(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GradCAM(_GradientCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017): w_k = mean_ij dy_c/dA_k(i, j); ReLU(sum_k w_k A_k).

    y_c is the class logit (pre-softmax), as in the paper, grad-cam and torchcam.

    Example:
        >>> import torch
        >>> from camfast.cam import GradCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> explainer, images = GradCAM(model, model[1]), torch.rand(2, 3, 16, 16)
        >>> explainer(images).shape                                  # the predicted classes
        torch.Size([2, 16, 16])
        >>> explainer(images, targets=[[0, 1], [2, 3]]).shape        # two classes per image
        torch.Size([2, 2, 16, 16])
    """

    def channel_weights(self, act, grad):
        return grad.mean((2, 3))


class GradCAMPlusPlus(_GradientCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018), with g = dy_c/dA and S_k = sum_ij A_k:

        alpha = g^2 / (2 g^2 + S_k g^3)            (a zero denominator counts as 1)
        variant="official":  alpha /= sum_ij alpha  (per channel, the authors' code)
        variant="grad-cam":  alpha = g^2 / (2 g^2 + S_k g^3 + 1e-6), 0 where g == 0, no normalisation
        w_k = sum_ij alpha * ReLU(g);  map = ReLU(sum_k w_k A_k)

    The authors' code multiplies every derivative by exp(y_c); that factor cancels in alpha and
    scales w by a positive constant per image, which the min-max removes, so it is left out
    (it overflows float32 for logits above 88). A channel whose alphas are all zero gets weight 0
    where the authors' code gets 0/0. torchcam's Grad-CAM++ is not offered: its alpha division
    is applied to a copy and has no effect.

    Example:
        >>> import torch
        >>> from camfast.cam import GradCAMPlusPlus
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> explainer = GradCAMPlusPlus(model, model[1], variant="grad-cam")
        >>> explainer(torch.rand(2, 3, 16, 16), targets=3).shape
        torch.Size([2, 16, 16])
    """

    def __init__(self, model: nn.Module, target_layer, variant: str = "official", **options):
        super().__init__(model, target_layer, **options)
        self.variant = check_choice(variant, "variant", ("official", "grad-cam"))

    def channel_weights(self, act, grad):
        g2 = grad * grad
        spatial_sum = act.sum((2, 3), keepdim=True)
        if self.variant == "grad-cam":
            alpha = g2 / (2 * g2 + spatial_sum * g2 * grad + 1e-6)
            alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
        else:
            denom = 2 * g2 + spatial_sum * g2 * grad
            alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
            total = alpha.sum((2, 3), keepdim=True)
            alpha = alpha / torch.where(total != 0, total, torch.ones_like(total))
        return (alpha * grad.relu()).sum((2, 3))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", variant={self.variant!r})"
