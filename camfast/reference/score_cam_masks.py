"""Score-CAM masked inputs, the executable specification (Wang et al., CVPR-W 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _extrema(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NaN-propagating (min, max) of each map of [N, K, h, w], shaped [N, K, 1, 1]."""
    return maps.amin(dim=(2, 3), keepdim=True), maps.amax(dim=(2, 3), keepdim=True)


def _normalized(maps: torch.Tensor, low: torch.Tensor, high: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros((), dtype=maps.dtype, device=maps.device)
    return torch.where(constant, zero, (maps - low) / (high - low))


def score_cam_masks(
    act: torch.Tensor,
    image: torch.Tensor,
    align_corners: bool = False,
    normalize_stage: str = "upsampled",
    return_constant: bool = False,
):
    """The masked inputs image * M_k of Score-CAM for every activation map A_k.

    up_k = bilinear upsample of act[n, k] to image's (H, W)  (F.interpolate, the given align_corners)
    "upsampled" (authors' code): M_k = (up_k - min up_k) / (max up_k - min up_k)
    "feature" (torch-cam):       M_k = upsample((A_k - min A_k) / (max A_k - min A_k))
    out[n, k] = M_k * image[n]

    A constant map gives M_k = 0. The authors test max == min on up_k; A_k constant makes up_k
    constant in exact arithmetic, but F.interpolate's c * w0 + c * w1 may round to a few ulps of
    noise that their normalisation would blow up into a random mask (1x1 maps always do). So a map
    counts as constant when max == min holds for A_k, or for up_k at the "upsampled" stage (a
    downsampled map can become constant).

    act: [N, K, h, w], image: [N, C, H, W] -> [N, K, C, H, W] contiguous (and, with
    return_constant, the [N, K] bool flags of constant maps).

    Example:
        >>> import torch, camfast
        >>> act, image = torch.rand(1, 4, 3, 3, dtype=torch.float64), torch.rand(1, 3, 8, 8, dtype=torch.float64)
        >>> ref = camfast.reference.score_cam_masks(act, image, normalize_stage="feature")
        >>> torch.allclose(ref, camfast.score_cam_masks(act, image, normalize_stage="feature"))
        True
    """
    n, k, h, w = act.shape
    size = image.shape[-2:]

    def upsample(maps: torch.Tensor) -> torch.Tensor:
        # One map per batch entry: F.interpolate rejects K == 0 channels but accepts an empty batch.
        up = F.interpolate(maps.reshape(n * k, 1, h, w), size=size, mode="bilinear", align_corners=align_corners)
        return up.reshape(n, k, *size)

    low, high = _extrema(act)
    constant = high == low
    if normalize_stage == "feature":
        masks = upsample(_normalized(act, low, high, constant))
    else:
        up = upsample(act)
        low, high = _extrema(up)
        constant = constant | (high == low)
        masks = _normalized(up, low, high, constant)
    out = (masks.unsqueeze(2) * image.unsqueeze(1)).contiguous()
    return (out, constant[:, :, 0, 0]) if return_constant else out
