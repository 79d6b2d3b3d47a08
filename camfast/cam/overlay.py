"""Heatmap overlays for looking at explainer outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validation import check_in_range


def jet(values: torch.Tensor) -> torch.Tensor:
    """The jet colormap in torch: values in [0, 1] of any shape -> RGB in [0, 1], channel last.

    The piecewise-linear form: each channel is a trapezoid 1.5 - |4v - c| clipped to [0, 1], with
    c = 3, 2, 1 for red, green, blue (dark blue at 0, dark red at 1), as in OpenCV's COLORMAP_JET.

    Example:
        >>> import torch
        >>> from camfast.cam import jet
        >>> jet(torch.tensor([0.0, 0.5, 1.0]))   # dark blue, green, dark red
        tensor([[0.0000, 0.0000, 0.5000],
                [0.5000, 1.0000, 0.5000],
                [0.5000, 0.0000, 0.0000]])
    """
    v = values.clamp(0, 1)[..., None]
    centers = torch.tensor([3.0, 2.0, 1.0], dtype=v.dtype, device=v.device)
    return (1.5 - (4 * v - centers).abs()).clamp(0, 1)


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend a jet-coloured CAM over an RGB image: (1 - alpha) * image + alpha * jet(cam).

    Args:
        image: Tensor[3, H, W] or [N, 3, H, W], float in [0, 1] or uint8 in [0, 255].
        cam: Tensor[H', W'] or [N, H', W'] in [0, 1] (an explainer's output); resized
            bilinearly to H x W when its size differs.
        alpha: weight of the heatmap, in [0, 1].

    Returns:
        The overlay with image's shape, dtype and device: uint8 for uint8 images, else float in
        [0, 1] (computed in float32).

    Example:
        >>> import torch
        >>> from camfast.cam import overlay
        >>> image = torch.rand(3, 32, 32)
        >>> overlay(image, torch.rand(8, 8)).shape            # the CAM is resized to the image
        torch.Size([3, 32, 32])
        >>> overlay((image * 255).to(torch.uint8), torch.rand(32, 32), alpha=0.3).dtype
        torch.uint8
    """
    alpha = check_in_range(alpha, "alpha", 0.0, 1.0)
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError("image must be a Tensor[3, H, W] or [N, 3, H, W] (RGB)")
    if not isinstance(cam, torch.Tensor) or cam.dim() != image.dim() - 1:
        raise ValueError(f"cam must be a Tensor with {image.dim() - 1} dims to match image, got "
                         f"{tuple(cam.shape) if isinstance(cam, torch.Tensor) else type(cam).__name__}")
    is_uint8 = image.dtype == torch.uint8
    rgb = image.float() / 255 if is_uint8 else image.float()
    heat = cam.float().to(image.device)
    if tuple(heat.shape[-2:]) != tuple(image.shape[-2:]):
        heat = F.interpolate(heat.reshape(-1, 1, *heat.shape[-2:]), size=tuple(image.shape[-2:]),
                             mode="bilinear", align_corners=False).reshape(*heat.shape[:-2], *image.shape[-2:])
    colour = jet(heat).movedim(-1, -3)
    out = ((1 - alpha) * rgb.clamp(0, 1) + alpha * colour).clamp(0, 1)
    if is_uint8:
        return (out * 255).round().to(torch.uint8)
    return out.to(image.dtype)
