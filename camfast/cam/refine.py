"""RefineCAM (arXiv 2605.14641): a base method's maps of several layers, multiplied."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_choice
from ._base import Explainer, resize, shift_scale
from .gradient import GradCAMPlusPlus, _GradientCAM

PRESETS = ("grad-cam", "torchcam")


def refine(maps: Sequence[torch.Tensor], size: Sequence[int], preset: str) -> torch.Tensor:
    """Per-layer raw maps [N, h_l, w_l] -> their product, by either peer's rule.

    "grad-cam" (RefineCAM, 1.5.7): each layer's map as grad-cam's base method returns it (ReLU,
        (m - min) / (max + 1e-7), bilinear to `size`, the same scaling again), the product, and
        the scaling once more.
    "torchcam" (RefineCAM, 0.5.0): each map ReLU, (m - min) / (max + 1e-8) twice (the base
        extractor's normalisation, then fuse_cams' own), bilinear to the largest map's size,
        the product, and the scaling once more.
    The explainer then resizes to the input and min-maxes, as for every method.

    >>> refine([torch.rand(2, 4, 4), torch.rand(2, 8, 8)], (16, 16), "torchcam").shape
    torch.Size([2, 8, 8])
    """
    if preset == "grad-cam":
        scaled = [shift_scale(resize(shift_scale(m.relu(), 1e-7), size), 1e-7) for m in maps]
        eps = 1e-7
    else:
        largest = [max(m.shape[d] for m in maps) for d in (-2, -1)]
        scaled = [resize(shift_scale(shift_scale(m.relu(), 1e-8), 1e-8), largest) for m in maps]
        eps = 1e-8
    return shift_scale(torch.stack(scaled).prod(0), eps)


class RefineCAM(Explainer):
    """RefineCAM: the maps of a gradient method at two or more layers, each normalised, resized and
    multiplied (see `refine`), so that the deep layers' localisation masks the shallow layers'
    detail. All layers come from one forward and, per class, one backward (grad-cam runs one
    forward and backward per layer).

    `base`: a gradient explainer class (default GradCAMPlusPlus, with variant="grad-cam" unless
    given: grad-cam's default base) and `base_options` its arguments. torchcam's default base is
    its own Grad-CAM++, whose alpha normalisation has no effect (see GradCAMPlusPlus), so camfast
    reproduces torchcam's RefineCAM with base=GradCAM (or another base both libraries share).

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
    ...                       nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    >>> RefineCAM(model, ["1", "3"])(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    needs_grad = True
    max_layers = None

    def __init__(self, model: nn.Module, target_layer, preset: str = "grad-cam", base: type | None = None, *,
                 score=None, reshape_transform=None, **base_options):
        super().__init__(model, target_layer, score=score, reshape_transform=reshape_transform)
        if len(self.target_layers) < 2:
            raise ValueError("RefineCAM needs at least two target layers, got one")
        self.preset = check_choice(preset, "preset", PRESETS)
        base = GradCAMPlusPlus if base is None else base
        if not (isinstance(base, type) and issubclass(base, _GradientCAM)):
            raise TypeError(f"base must be a gradient explainer class (GradCAM, GradCAMPlusPlus, ...), got {base!r}")
        if base is GradCAMPlusPlus:
            base_options.setdefault("variant", "grad-cam")
        self.base = base(model, target_layer, score=score, reshape_transform=reshape_transform, **base_options)

    def _explain(self, x, targets):
        scores, per_class = self.base.layer_maps(x, targets)
        return scores.shape_maps(torch.stack([refine(maps, x.shape[2:], self.preset) for maps in per_class], 1))

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, preset={self.preset!r}, base={type(self.base).__name__})"
