"""Finer-CAM (Zhang et al., CVPR 2025, arXiv 2501.11309): a gradient method explaining the
target class against the classes the model finds most similar to it."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_choice, check_number
from ._base import Scores, check_logits, class_indices
from .gradient import GradCAM, _GradientCAM, preset_options

WEIGHTINGS = ("softmax", "mean")


def contrastive_scores(logits: torch.Tensor, classes: torch.Tensor, num_references: int, alpha: float,
                       weighting: str) -> torch.Tensor:
    """logits [N, C], classes [N, T] -> the Finer-CAM objective [N, T].

    The references of (n, t) are the `num_references` classes other than c = classes[n, t] with
    the smallest |y_j - y_c| (chosen without gradient); then
      weighting="softmax": s = sum_j p_j (y_c - alpha y_j) / (sum_j p_j + 1e-9), p = softmax(y),
                           with p inside the graph (the authors' code, grad-cam's FinerWeightedTarget);
      weighting="mean":    s = y_c - alpha mean_j y_j (torchcam's FinerCAM).

    >>> logits = torch.tensor([[4.0, 3.0, 1.0, 0.0]])
    >>> contrastive_scores(logits, torch.tensor([[0]]), 2, 0.5, "mean")   # references 1 and 2
    tensor([[3.]])
    """
    n, t = classes.shape
    target = logits.gather(1, classes)
    detached = logits.detach()
    distance = (detached[:, None, :] - target.detach()[..., None]).abs()
    distance.scatter_(2, classes[..., None], float("inf"))  # never the target itself
    references = distance.topk(num_references, dim=2, largest=False).indices  # [N, T, R]
    y_ref = logits[:, None, :].expand(n, t, -1).gather(2, references)
    if weighting == "mean":
        return target - alpha * y_ref.mean(2)
    p = logits.softmax(1)[:, None, :].expand(n, t, -1).gather(2, references)
    return (p * (target[..., None] - alpha * y_ref)).sum(2) / (p.sum(2) + 1e-9)


class FinerCAM(_GradientCAM):
    """Finer-CAM: a base gradient method (default GradCAM) applied to a contrastive objective,
    the target logit against the `num_references` classes whose logits lie closest to it (see
    `contrastive_scores`), so features the similar classes share cancel out.

    The peers define it differently; `alpha=`, `weighting=` and `fuse=` override the preset:

    | preset | source | weighting | alpha | fuse |
    |---|---|---|---|---|
    | "official" (default) | the authors' code (Imageomics/Finer-CAM, their grad-cam FinerCAM) | "softmax" | 1.0 | "mean" |
    | "grad-cam" | grad-cam 1.5.7 `FinerCAM` (the same code) | "softmax" | 1.0 | "mean" |
    | "torchcam" | torchcam 0.5.0 `FinerCAM` | "mean" | 0.6 | "max" |

    `base` is a gradient explainer class (GradCAM, GradCAMPlusPlus, LayerCAM, ...) and
    `base_options` its arguments. With several classes per image each class gets its own
    references; a model with fewer than num_references + 1 classes compares with all the others. grad-cam applies the objective only when targets=None (its predicted class);
    camfast applies it to any target.

    Example:
        >>> import torch
        >>> from camfast.cam import FinerCAM, LayerCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> FinerCAM(model, "1")(torch.rand(2, 3, 16, 16)).shape             # predicted classes
        torch.Size([2, 16, 16])
        >>> FinerCAM(model, "1", preset="torchcam", base=LayerCAM)(torch.rand(2, 3, 16, 16), [[0, 1], [2, 3]]).shape
        torch.Size([2, 2, 16, 16])
    """

    PRESETS = {"official": {"weighting": "softmax", "alpha": 1.0, "fuse": "mean"},
               "grad-cam": {"weighting": "softmax", "alpha": 1.0, "fuse": "mean"},
               "torchcam": {"weighting": "mean", "alpha": 0.6, "fuse": "max"}}

    def __init__(self, model: nn.Module, target_layer, preset: str = "official", base: type | None = None, *,
                 num_references: int = 3, alpha: float | None = None, weighting: str | None = None,
                 fuse: str | None = None, reshape_transform=None, **base_options):
        if "score" in base_options:
            raise TypeError("FinerCAM builds its objective from the model's logits; it takes no score=")
        options = preset_options(self.PRESETS, preset, weighting=weighting, alpha=alpha, fuse=fuse)
        super().__init__(model, target_layer, fuse=options["fuse"], reshape_transform=reshape_transform)
        base = GradCAM if base is None else base
        if not (isinstance(base, type) and issubclass(base, _GradientCAM)) or issubclass(base, FinerCAM):
            raise TypeError(f"base must be a gradient explainer class (GradCAM, LayerCAM, ...), got {base!r}")
        if isinstance(num_references, bool) or not isinstance(num_references, int) or num_references < 1:
            raise ValueError(f"num_references must be a positive int, got {num_references!r}")
        self.preset, self.num_references = preset, num_references
        self.alpha = check_number(options["alpha"], "alpha")
        self.weighting = check_choice(options["weighting"], "weighting", WEIGHTINGS)
        self.base = base(model, target_layer, fuse=options["fuse"], reshape_transform=reshape_transform,
                         **base_options)

    def scores(self, output, targets, n):
        logits = check_logits(output, n)
        if logits.shape[1] < 2:
            raise ValueError("FinerCAM compares the target with other classes: the model must return two or more")
        parsed, class_axis = targets
        classes = class_indices(parsed, logits)
        # As both peers do, fewer references when the model has too few other classes.
        references = min(self.num_references, logits.shape[1] - 1)
        values = contrastive_scores(logits, classes, references, self.alpha, self.weighting)
        return Scores(values, classes, class_axis)

    # The base method's reduction, gradients and fusion.
    def layer_map(self, act, grad):
        return self.base.layer_map(act, grad)

    def gradients(self, scores, acts, names):
        return self.base.gradients(scores, acts, names)

    def fuse_maps(self, maps, size):
        return self.base.fuse_maps(maps, size)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, preset={self.preset!r}, base={type(self.base).__name__})"
