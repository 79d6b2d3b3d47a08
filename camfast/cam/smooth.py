"""Smooth Grad-CAM++ (Omeiza et al., arXiv 1908.01224), with torchcam 0.5.0's semantics."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_positive
from ._base import Explainer, Scores, class_gradients, layer_name
from ._noise import cpu_generator, cpu_normal
from .score import _positive_int


class SmoothGradCAMpp(Explainer):
    """Smooth Grad-CAM++, as torchcam 0.5.0 computes it. With A_0 the clean activation and, for
    m = 1..n, g_m = dy_c/dA at the noisy input x + e_m (e_m ~ N(0, std^2), one value per input
    element) and A_n the activation of the last noisy pass:

        D2 = mean_m g_m^2,   D3 = mean_m g_m^3
        alpha = D2 / (2 D2 + sum_ij(D3 * A_0) + 1e-8)       (sum over space: one value per channel)
        w_k = sum_ij alpha * ReLU(g_n);   M = ReLU(sum_k w_k A_n)

    torchcam's numerator D2 (the paper has D1) and its use of the last noisy pass's activation
    and gradient in the final sum are kept, so the map equals torchcam's. The noise is drawn on
    the CPU in float32 from `generator` (default: torch's global CPU generator), one draw of the
    input's shape per sample, as torchcam draws it: after `torch.manual_seed(s)` both libraries
    add the same noise. The n noisy passes are one forward and one backward each.

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 4))
    >>> SmoothGradCAMpp(model, "1", num_samples=2)(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    needs_grad = True

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, num_samples: int = 4, std: float = 0.3,
                 generator: torch.Generator | None = None, *, score=None, reshape_transform=None):
        super().__init__(model, target_layer, score=score, reshape_transform=reshape_transform)
        self.num_samples = _positive_int(num_samples, "num_samples")
        self.std = check_positive(std, "std")
        self.generator = cpu_generator(generator)

    def _explain(self, x, targets):
        with torch.no_grad():
            output, (clean,) = self.forward(x)
            explained = self.scores(output, targets, x.shape[0])  # the classes stay those of the clean pass
        name = layer_name(self.model, self.target_layer)
        d2, d3 = {}, {}  # per class: sums of g^2 and g^3, in the layout autograd returns (torchcam's)
        for _ in range(self.num_samples):
            noisy = x + cpu_normal(x.shape, self.std, self.generator).to(x.device)
            output, (act,) = self.forward(noisy, grad=True)
            scores = self.scores(output, targets, x.shape[0]) if explained.classes is None else \
                Scores(output.gather(1, explained.classes), explained.classes, explained.class_axis)
            last = [g for (g,) in class_gradients(scores, [act], [name])]
            for t, g in enumerate(last):
                d2[t], d3[t] = d2.get(t, 0) + g.pow(2), d3.get(t, 0) + g.pow(3)
        act = act.detach()
        cams = []
        for t, g in enumerate(last):
            g2, g3 = d2[t] / self.num_samples, d3[t] / self.num_samples
            alpha = g2 / (2 * g2 + (g3 * clean).flatten(2).sum(-1)[:, :, None, None] + 1e-8)
            weights = (alpha * g.relu()).flatten(2).sum(-1)
            # Reduced in torchcam's order and layout (products, then a sum over channels): a map at
            # 2 x 2 or 4 x 4 has few pixels and the min-max magnifies rounding differences.
            cams.append((weights[:, :, None, None] * act).sum(1).relu())
        return explained.shape_maps(torch.stack(cams, 1))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", num_samples={self.num_samples}, std={self.std})"
