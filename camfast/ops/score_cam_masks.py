"""Score-CAM masked inputs, the public function."""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._precision import promoted
from .._validation import check_choice, check_bool, check_nchw, check_same_device

NORMALIZE_STAGES = ("upsampled", "feature")


def score_cam_masks(
    act: torch.Tensor,
    image: torch.Tensor,
    *,
    align_corners: bool = False,
    normalize_stage: str = "upsampled",
    return_constant: bool = False,
    backend: str | None = None,
):
    """The masked inputs image * M_k that Score-CAM scores, one per activation map A_k.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for CNNs", CVPR-W 2020. Per
    (n, k), with up = bilinear upsample of act[n, k] to image's (H, W) (F.interpolate semantics):

        normalize_stage="upsampled" (authors' code):  M = (up - min up) / (max up - min up)
        normalize_stage="feature"   (torch-cam):      M = upsample((A - min A) / (max A - min A))
        out[n, k] = M * image[n]

    A constant map gives M = 0: all constant maps give the same masked input (zeros), so an
    explainer can score them with one forward pass; their [N, K] flags come back with
    return_constant=True. A map is constant when max A == min A, or, at the "upsampled" stage,
    max up == min up (the authors test only up, where F.interpolate's rounding can leave a few ulps
    of noise on a constant A, e.g. on every 1x1 map). A map holding NaN gives a NaN mask. When
    neither axis shrinks (the Score-CAM setting), up is constant exactly when A is; when one does,
    a map can upsample to one that is constant in exact arithmetic but not after rounding, whose
    mask amplifies rounding noise that differs between backends.

    The masks are explainer inputs, not differentiable: on the compiled backends a backward
    through them raises RuntimeError (the reference is plain PyTorch and differentiates).

    Args:
        act: Tensor[N, K, h, w] activation maps, any strides (K may be a chunk of the channels).
        image: Tensor[N, C, H, W] (usually C = 3), on act's device, any strides.
        align_corners: F.interpolate's align_corners (False in the authors' code).
        normalize_stage: "upsampled" or "feature", see above.
        return_constant: also return the [N, K] bool tensor of constant maps.
        backend: None/"auto", "cpp", "triton" or "reference" (see camfast.show_config()).

    Returns:
        Tensor[N, K, C, H, W] contiguous, in the dtype torch's type promotion gives act and image
        (under torch.autocast: the autocast dtype, float64 inputs excepted); with
        return_constant, (masks, constant).

    Example:
        >>> import torch, camfast
        >>> act = torch.tensor([[[[0.0, 1.0]], [[2.0, 2.0]]]])   # two 1x2 maps; the second is constant
        >>> image = torch.ones(1, 3, 2, 4)
        >>> masks, constant = camfast.score_cam_masks(act, image, return_constant=True)
        >>> masks.shape                                         # [N, K, C, H, W]
        torch.Size([1, 2, 3, 2, 4])
        >>> masks[0, 0, 0, 0]                                   # the first map upsampled and min-maxed
        tensor([0.0000, 0.2500, 0.7500, 1.0000])
        >>> constant
        tensor([[False,  True]])
    """
    check_nchw(act, "act")
    check_nchw(image, "image")
    check_same_device({"act": act, "image": image})
    if act.shape[0] != image.shape[0]:
        raise ValueError(
            f"act and image must have the same batch size N, got {act.shape[0]} and {image.shape[0]}"
        )
    align_corners = check_bool(align_corners, "align_corners")
    normalize_stage = check_choice(normalize_stage, "normalize_stage", NORMALIZE_STAGES)
    return_constant = check_bool(return_constant, "return_constant")
    act, image = promoted(act, image)
    chosen = _backend.choose(backend, act, image)
    if chosen == "reference":
        masks, constant = reference.score_cam_masks(act, image, align_corners, normalize_stage, return_constant=True)
    else:
        masks, constant = _backend.run("score_cam_masks", chosen, act, image, align_corners,
                                       normalize_stage == "feature")
    return (masks, constant) if return_constant else masks
