"""CAM from the classifier weights and the gradient family: Grad-CAM, Grad-CAM++, HiResCAM,
Grad-CAM element-wise, XGrad-CAM, LayerCAM, ShapleyCAM and FEM.

Each gradient method is one reduction of the activation A and its gradient g, written in its
`layer_map` (or `channel_weights`); everything else (targets, several layers and classes, the
fusion, the output) is shared in `_GradientCAM`. The reductions of Grad-CAM++, HiResCAM,
Grad-CAM element-wise and LayerCAM are the fused op `camfast.weighted_channel_sum`, which makes no
temporary of A's size. Grad-CAM and XGrad-CAM keep their two-step eager form (per-channel weights,
then one matrix product): the op computes them exactly too, but measured 0.5-0.6x (Grad-CAM) and
0.7-1.2x (XGrad-CAM) that form on one CPU thread (benchmarks/NOTES.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_choice, check_in_range, check_number, check_positive
from ..ops import weighted_channel_sum
from ._base import (Explainer, Scores, check_connected, check_differentiable, check_fuse, check_logits,
                    class_gradients, fuse_layers, layer_name, resolve_layer)


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
    "max": torchcam's; see camfast.cam._base.fuse_layers).

    A method defines its reduction in one place: `layer_map(act, grad)` (the raw map [N, h, w] of
    one layer), by default ReLU(sum_k w_k A_k) with `channel_weights(act, grad)` -> [N, K].
    `gradients` yields, per class, what `layer_map` receives as `grad`. A method with
    needs_grad = False (FEM) gets grad=None and one map for every class.
    """

    needs_grad = True
    max_layers = None

    def __init__(self, model: nn.Module, target_layer, *, fuse: str = "mean", score=None, reshape_transform=None):
        super().__init__(model, target_layer, score=score, reshape_transform=reshape_transform)
        self.fuse = check_fuse(fuse)
        self.scale = None  # applied to each normalised layer map before fusion (LayerCAM's tanh)

    def _explain(self, x, targets):
        scores, per_class = self.layer_maps(x, targets)
        return scores.shape_maps(torch.stack([self.fuse_maps(maps, x.shape[2:]) for maps in per_class], 1))

    def fuse_maps(self, maps: list[torch.Tensor], size) -> torch.Tensor:
        return fuse_layers(maps, size, self.fuse, self.scale)

    def layer_maps(self, x, targets) -> tuple[Scores, list[list[torch.Tensor]]]:
        """(the scores, per class the raw map [N, h, w] of every target layer), from one forward."""
        output, acts = self.forward(x, grad=self.needs_grad)
        scores = self.scores(output, targets, x.shape[0])
        if not self.needs_grad:
            return scores, [[self.layer_map(a, None) for a in acts]] * scores.values.shape[1]
        names = [layer_name(self.model, layer) for layer in self.target_layers]
        values = [a.detach() for a in acts]
        return scores, [[self.layer_map(a, g) for a, g in zip(values, grads)]
                        for grads in self.gradients(scores, acts, names)]

    def gradients(self, scores: Scores, acts: list[torch.Tensor], names: list[str]):
        """Per class, one gradient per target layer: dy_c/dA."""
        return class_gradients(scores, acts, names)

    def layer_map(self, act: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """The raw map [N, h, w] of one layer: ReLU(sum_k w_k A_k) with the method's weights."""
        return torch.einsum("nk,nkhw->nhw", self.channel_weights(act, grad), act).relu()

    def channel_weights(self, act: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def preset_options(presets: dict[str, dict], preset: str, **given) -> dict:
    """The preset's option values, each replaced by the caller's where it is not None."""
    check_choice(preset, "preset", tuple(presets))
    return {name: presets[preset][name] if value is None else value for name, value in given.items()}


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

    def layer_map(self, act, grad):
        return weighted_channel_sum(act, grad, "grad-cam++" if self.variant == "official" else "grad-cam++/grad-cam")

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", variant={self.variant!r})"


class HiResCAM(_GradientCAM):
    """HiResCAM (Draelos and Carin, 2020; grad-cam 1.5.7): M = ReLU(sum_k g_k * A_k), g = dy_c/dA.

    The gradient multiplies the activation pixel by pixel before the channel sum, so the map is
    the exact contribution of each position to y_c when the layer feeds GAP and a linear head
    (where it equals Grad-CAM).

    Example:
        >>> import torch
        >>> from camfast.cam import HiResCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        ...     torch.nn.Linear(8, 5)).eval()
        >>> HiResCAM(model, "1")(torch.rand(2, 3, 16, 16), targets=[1, 4]).shape
        torch.Size([2, 16, 16])
    """

    def layer_map(self, act, grad):
        return weighted_channel_sum(act, grad, "hires-cam")


class GradCAMElementWise(_GradientCAM):
    """Grad-CAM element-wise (grad-cam 1.5.7): M = sum_k ReLU(g_k * A_k), g = dy_c/dA.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from camfast.cam import GradCAMElementWise
        >>> features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU())
        >>> model = nn.Sequential(features, nn.Conv2d(4, 6, 1), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(6, 3))
        >>> GradCAMElementWise(model, features)(torch.rand(2, 3, 12, 12), targets=[[0, 1], [2, 0]]).shape
        torch.Size([2, 2, 12, 12])
    """

    def layer_map(self, act, grad):
        return weighted_channel_sum(act, grad, "element-wise")  # its final ReLU changes nothing


class XGradCAM(_GradientCAM):
    """XGrad-CAM (Fu et al., BMVC 2020): w_k = sum_ij g_k A_k / (sum_ij A_k + eps),
    M = ReLU(sum_k w_k A_k), g = dy_c/dA.

    The presets differ in eps and in how several layers are fused; `eps=` and `fuse=` override:

    | preset | source | eps | fuse |
    |---|---|---|---|
    | "official" (default) | the authors' code (Fu0511/XGrad-CAM) | 1e-6 | "mean" |
    | "grad-cam" | grad-cam 1.5.7 `XGradCAM` | 1e-7 | "mean" |
    | "torchcam" | torchcam 0.5.0 `XGradCAM` | 1e-8 | "max" |

    eps is added to a signed sum: on a layer without a ReLU, a channel whose sum is near -eps gets
    a huge weight, in every implementation.

    Example:
        >>> import torch
        >>> from camfast.cam import XGradCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> XGradCAM(model, "1", preset="torchcam")(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 16, 16])
    """

    PRESETS = {"official": {"eps": 1e-6, "fuse": "mean"}, "grad-cam": {"eps": 1e-7, "fuse": "mean"},
               "torchcam": {"eps": 1e-8, "fuse": "max"}}

    def __init__(self, model: nn.Module, target_layer, preset: str = "official", *, eps: float | None = None,
                 fuse: str | None = None, score=None, reshape_transform=None):
        options = preset_options(self.PRESETS, preset, eps=eps, fuse=fuse)
        super().__init__(model, target_layer, fuse=options["fuse"], score=score, reshape_transform=reshape_transform)
        self.preset, self.eps = preset, check_in_range(options["eps"], "eps", 0.0, math.inf)

    def channel_weights(self, act, grad):
        return torch.einsum("nkhw,nkhw->nk", grad, act) / (act.sum((2, 3)) + self.eps)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", preset={self.preset!r})"


def tanh_scale(gamma: float):
    """LayerCAM's Eq. 9 on a map normalised to [0, 1]: tanh(gamma m)."""
    return lambda m: torch.tanh(gamma * m)


class LayerCAM(_GradientCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021): M = ReLU(sum_k ReLU(g_k) * A_k), g = dy_c/dA.

    The gradient weighs each activation pixel by pixel. Several layers are fused as the presets
    say (`fuse=` and `scale=` override):

    | preset | source | each layer's normalised map | fuse |
    |---|---|---|---|
    | "official" (default) | the paper's Eq. 9 with gamma = 2 on every layer, fused by element-wise max (the authors' answer in torch-cam#76) | tanh(gamma m) | "max" |
    | "grad-cam" | grad-cam 1.5.7 `LayerCAM` with several target layers | m | "mean" |
    | "torchcam" | torchcam 0.5.0 `LayerCAM` + `fuse_cams` | tanh(2 m) | "max" |

    One layer is never scaled (both peers return it as it is).

    Example:
        >>> import torch
        >>> from camfast.cam import LayerCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...     torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> LayerCAM(model, ["1", "3"])(torch.rand(2, 3, 16, 16), targets=[0, 3]).shape   # two layers, tanh + max
        torch.Size([2, 16, 16])
    """

    PRESETS = {"official": {"fuse": "max", "scale": "tanh"}, "grad-cam": {"fuse": "mean", "scale": "none"},
               "torchcam": {"fuse": "max", "scale": "tanh"}}

    def __init__(self, model: nn.Module, target_layer, preset: str = "official", *, fuse: str | None = None,
                 scale: str | None = None, gamma: float = 2.0, score=None, reshape_transform=None):
        options = preset_options(self.PRESETS, preset, fuse=fuse, scale=scale)
        super().__init__(model, target_layer, fuse=options["fuse"], score=score, reshape_transform=reshape_transform)
        self.preset, self.gamma = preset, check_positive(gamma, "gamma")
        if check_choice(options["scale"], "scale", ("none", "tanh")) == "tanh":
            self.scale = tanh_scale(self.gamma)

    def layer_map(self, act, grad):
        return layer_cam(act, grad)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", preset={self.preset!r})"


def layer_cam(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """LayerCAM's map of one layer, [N, K, h, w] -> [N, h, w]: ReLU(sum_k ReLU(g_k) * A_k)."""
    return weighted_channel_sum(act, grad, "layer-cam")


class ShapleyCAM(GradCAM):
    """ShapleyCAM (Cai, arXiv 2501.06261; grad-cam 1.5.7): the Grad-CAM map with the gradient
    corrected by the second-order term of the Shapley value of each channel,

        w_k = mean_ij (g - H A / 2)_k,   M = ReLU(sum_k w_k A_k)

    with g = ds/dA and H A the Hessian of s with respect to A times A (one Hessian-vector
    product per class and layer). `objective="logit"`: s = y_c; `objective="rest"` (the paper's
    ReST): s = y_c - CE(y, c) = y_c + log softmax(y)_c. Where s is piecewise linear in A (ReLU,
    max-pool, eval-mode batch norm and a linear head, with s = y_c), H A = 0 and ShapleyCAM is
    Grad-CAM.

    Example:
        >>> import torch
        >>> from camfast.cam import ShapleyCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
        ...     torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> ShapleyCAM(model, "1", objective="rest")(torch.rand(2, 3, 16, 16), targets=[1, 4]).shape
        torch.Size([2, 16, 16])
    """

    def __init__(self, model: nn.Module, target_layer, objective: str = "logit", *, fuse: str = "mean", score=None,
                 reshape_transform=None):
        super().__init__(model, target_layer, fuse=fuse, score=score, reshape_transform=reshape_transform)
        self.objective = check_choice(objective, "objective", ("logit", "rest"))
        if self.objective == "rest" and score is not None:
            raise TypeError("objective='rest' is computed from the model's logits; it cannot be combined with score=")

    def scores(self, output, targets, n):
        scores = super().scores(output, targets, n)
        if self.objective == "rest":
            scores.values = scores.values + check_logits(output, n).log_softmax(1).gather(1, scores.classes)
        return scores

    def gradients(self, scores, acts, names):
        """Per class: g - H A / 2 for every layer (each layer's own Hessian-vector product)."""
        check_differentiable(scores)
        values = scores.values
        for t in range(values.shape[1]):
            grads = torch.autograd.grad(values[:, t].sum(), acts, retain_graph=True, create_graph=True,
                                        allow_unused=True)
            check_connected(grads, names)
            yield [(g - 0.5 * _hessian_times(g, a)).detach() for g, a in zip(grads, acts)]

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", objective={self.objective!r})"


def _hessian_times(grad: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """H A = d(g . A)/dA with A held constant; 0 where g does not depend on A (a linear head)."""
    if not grad.requires_grad:
        return torch.zeros_like(grad)
    (hvp,) = torch.autograd.grad(grad, act, grad_outputs=act.detach(), retain_graph=True, allow_unused=True)
    return torch.zeros_like(grad) if hvp is None else hvp


class FEM(_GradientCAM):
    """FEM, the feature explanation method (Fuad et al., IPTA 2020; grad-cam 1.5.7), without
    gradients and without a class:

        w_k = mean_ij [A_k > mean_ij A_k + k std_ij A_k]    (population std),  M = ReLU(sum_k w_k A_k)

    the share of each map's pixels above its k-sigma threshold. `targets` only sets the output's
    shape (a class axis repeats the map).

    Example:
        >>> import torch
        >>> from camfast.cam import FEM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> FEM(model, "1", k=2)(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 16, 16])
    """

    needs_grad = False

    def __init__(self, model: nn.Module, target_layer, k: float = 2.0, *, fuse: str = "mean", score=None,
                 reshape_transform=None):
        super().__init__(model, target_layer, fuse=fuse, score=score, reshape_transform=reshape_transform)
        self.k = check_number(k, "k")

    def channel_weights(self, act, grad):
        std, mean = torch.std_mean(act, (2, 3), correction=0, keepdim=True)
        return (act > mean + self.k * std).to(act.dtype).mean((2, 3))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", k={self.k})"
