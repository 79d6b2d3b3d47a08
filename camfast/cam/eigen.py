"""EigenCAM and EigenGradCAM: the first principal component of the target layer's pixels.

Each pixel of an image is a K-vector (its channels). After centring each channel over the
pixels, the map is every pixel's projection on the first principal direction. grad-cam 1.5.7
takes it from a full SVD of the hw x K matrix; here it comes from the smaller of the two Gram
matrices (K x K, or hw x hw when there are fewer pixels than channels), in float64, batched over
the images, with one symmetric eigendecomposition each.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._validation import check_choice
from ._base import Explainer, check_fuse, class_gradients, fuse_layers, layer_name

SIGNS = ("absmax", "lapack")


def first_component(x: torch.Tensor, sign: str = "absmax") -> torch.Tensor:
    """[N, K, h, w] -> [N, h, w]: each pixel's projection on the first principal component.

    With M the centred [hw, K] matrix of one image (NaN read as 0, as grad-cam does) and v the
    top eigenvector of M^T M, the map is M v. When hw < K the same map is sqrt(lambda) u with u
    the top eigenvector of M M^T. The sign of an eigenvector is arbitrary:
      sign="absmax": the entry of largest magnitude is made positive (SegEigenCAM's rule); when
                     the largest and smallest entries have equal magnitude the map is kept as is.
      sign="lapack": grad-cam's sign, i.e. whatever NumPy's LAPACK SVD returns (grad-cam issue
                     #315): the map is computed on the CPU in float32 with NumPy, as grad-cam
                     does. A different LAPACK build may return the other sign.

    >>> x = torch.rand(2, 8, 5, 5)
    >>> first_component(x).shape
    torch.Size([2, 5, 5])
    """
    check_choice(sign, "sign", SIGNS)
    if sign == "lapack":
        return _lapack_component(x)
    n, k = x.shape[:2]
    m = x.flatten(2).double()
    m = torch.where(m.isnan(), torch.zeros_like(m), m)
    m = m - m.mean(2, keepdim=True)  # [N, K, hw], each channel centred over the pixels
    if k <= m.shape[2]:
        _, vectors = torch.linalg.eigh(m @ m.mT)
        proj = torch.einsum("nkp,nk->np", m, vectors[..., -1])
    else:
        values, vectors = torch.linalg.eigh(m.mT @ m)
        proj = vectors[..., -1] * values[..., -1:].clamp_min(0).sqrt()
    flip = proj.amax(1, keepdim=True) < -proj.amin(1, keepdim=True)
    proj = torch.where(flip, -proj, proj)
    return proj.view(n, *x.shape[2:]).to(torch.promote_types(x.dtype, torch.float32))


def _lapack_component(x: torch.Tensor) -> torch.Tensor:
    """grad-cam's get_2d_projection: float32 NumPy, SVD per image, the first right singular vector.

    full_matrices=False returns the same first singular vector as grad-cam's full_matrices=True
    without the unused hw x hw factor U.
    """
    batch = x.detach().to("cpu", torch.float32).numpy().copy()
    batch[np.isnan(batch)] = 0
    maps = []
    for act in batch:
        m = act.reshape(act.shape[0], -1).T
        m = m - m.mean(axis=0)
        vt = np.linalg.svd(m, full_matrices=False)[2]
        maps.append((m @ vt[0]).reshape(act.shape[1:]))
    return torch.from_numpy(np.float32(maps)).to(x.device)


class EigenCAM(Explainer):
    """EigenCAM (Muhammad and Yeasin, IJCNN 2020): M = ReLU(first principal component of A).

    A is the target layer's activation: no gradients and no class, so `targets` only sets the
    output's shape (a class axis repeats the map). `sign` chooses the eigenvector's sign (see
    `first_component`): "absmax" is deterministic, "lapack" reproduces grad-cam 1.5.7, whose
    sign is arbitrary (its issue #315). Several target layers are fused by `fuse` (grad-cam's
    "mean" or torchcam's "max", see camfast.cam._base.fuse_layers).

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 4))
    >>> EigenCAM(model, "1")(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    max_layers = None

    def __init__(self, model: nn.Module, target_layer, sign: str = "absmax", *, fuse: str = "mean", score=None,
                 reshape_transform=None):
        super().__init__(model, target_layer, score=score, reshape_transform=reshape_transform)
        self.sign = check_choice(sign, "sign", SIGNS)
        self.fuse = check_fuse(fuse)

    def _explain(self, x, targets):
        output, acts = self.forward(x)
        scores = self.scores(output, targets, x.shape[0])
        cam = fuse_layers([first_component(a, self.sign).relu() for a in acts], x.shape[2:], self.fuse)
        return scores.shape_maps(cam[:, None].expand(-1, scores.values.shape[1], -1, -1))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", sign={self.sign!r})"


class EigenGradCAM(EigenCAM):
    """EigenGradCAM (grad-cam 1.5.7): M = ReLU(first principal component of dy_c/dA * A), one map
    per class.

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 4))
    >>> EigenGradCAM(model, "1")(torch.rand(2, 3, 16, 16), targets=[[0, 1], [2, 3]]).shape
    torch.Size([2, 2, 16, 16])
    """

    needs_grad = True

    def _explain(self, x, targets):
        output, acts = self.forward(x, grad=True)
        scores = self.scores(output, targets, x.shape[0])
        names = [layer_name(self.model, layer) for layer in self.target_layers]
        values = [a.detach() for a in acts]
        per_class = [fuse_layers([first_component(g * a, self.sign).relu() for a, g in zip(values, grads)],
                                 x.shape[2:], self.fuse)
                     for grads in class_gradients(scores, acts, names)]
        return scores.shape_maps(torch.stack(per_class, 1))
