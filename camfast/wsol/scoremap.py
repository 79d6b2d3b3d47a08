"""Score maps as the WSOL protocol (clovaai/wsolevaluation) prepares them.

A CAM becomes a score map by a cubic resize in float64 (cv2.resize INTER_CUBIC, as the protocol's
inference code) and a min-max normalisation; boxes are then cut from its uint8 version
q = uint8(255 * score) at the integer levels k = int(threshold * reference), where the reference
is max(q) (percentile 100) or a percentile of q (PaS).
"""

from __future__ import annotations

import numbers

import cv2
import numpy as np
import torch


def _as_float64_maps(cam, name: str) -> tuple[np.ndarray, bool]:
    """cam as a float64 [N, H, W] array, and whether it was a single [H, W] map."""
    if isinstance(cam, torch.Tensor):
        if not (cam.dtype.is_floating_point or cam.dtype in (torch.uint8, torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real-valued tensor, got {cam.dtype}")
        cam = cam.detach().cpu().to(torch.float64).numpy()
    elif isinstance(cam, np.ndarray):
        if cam.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real-valued array, got {cam.dtype}")
        cam = np.asarray(cam, dtype=np.float64)  # no copy when it is float64 already
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray [H, W] or [N, H, W], "
                        f"got {type(cam).__name__}")
    if cam.ndim not in (2, 3):
        raise ValueError(f"{name} must be [H, W] or [N, H, W], got shape {cam.shape}")
    if cam.shape[-1] == 0 or cam.shape[-2] == 0:
        raise ValueError(f"{name} must have H > 0 and W > 0, got shape {cam.shape}")
    return (cam[None], True) if cam.ndim == 2 else (cam, False)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size must be None or (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def normalize_cam(cam, size=None) -> torch.Tensor:
    """Min-max normalised score maps in float64, optionally resized first.

    cam: [H, W] or [N, H, W] tensor or array. size: (height, width) to resize to with OpenCV's
    bicubic interpolation in float64 (the protocol's cv2.resize INTER_CUBIC), or None. Each map
    becomes (m - min) / max(m - min); a map holding a NaN, or constant, becomes all zeros. Returns a
    float64 tensor of cam's shape (with the new size) on cam's device (CPU for arrays).

    Example:
        >>> import torch
        >>> from camfast.wsol import normalize_cam
        >>> normalize_cam(torch.tensor([[0.0, 1.0], [2.0, 4.0]]))
        tensor([[0.0000, 0.2500],
                [0.5000, 1.0000]], dtype=torch.float64)
        >>> normalize_cam(torch.rand(5, 14, 14), (224, 224)).shape   # resized as the protocol does
        torch.Size([5, 224, 224])
    """
    maps, single = _as_float64_maps(cam, "cam")
    size = _check_size(size)
    if size is not None:
        # dsize is (width, height); each map is resized alone, as the protocol does.
        resized = [cv2.resize(np.ascontiguousarray(m), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
                   for m in maps]
        maps = np.stack(resized) if resized else np.empty((0, *size))
    out = np.zeros_like(maps)
    if len(maps):
        shifted = maps - maps.min(axis=(1, 2), keepdims=True)  # NaN propagates to the span
        span = shifted.max(axis=(1, 2), keepdims=True)
        np.divide(shifted, span, out=out, where=span > 0)  # NaN or constant maps stay zero
    result = torch.from_numpy(out[0] if single else out)
    return result.to(cam.device) if isinstance(cam, torch.Tensor) else result


def check_scoremaps(scoremaps, name: str = "scoremaps") -> tuple[np.ndarray, bool]:
    """The protocol's validity check: float maps without NaN, within [0, 1]. Returns float64 [N, H, W]."""
    if isinstance(scoremaps, torch.Tensor) and not scoremaps.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {scoremaps.dtype}")
    if isinstance(scoremaps, np.ndarray) and scoremaps.dtype.kind != "f":
        raise TypeError(f"{name} must be floating point, got {scoremaps.dtype}")
    maps, single = _as_float64_maps(scoremaps, name)
    low, high = (maps.min(), maps.max()) if maps.size else (0.0, 0.0)  # NaN propagates to both
    if np.isnan(low):
        raise ValueError(f"{name} must not contain NaN (normalize_cam turns NaN maps into zeros)")
    if low < 0 or high > 1:
        raise ValueError(f"{name} must lie in [0, 1] (use normalize_cam), got [{low}, {high}]")
    return maps, single


def to_uint8(scoremaps: np.ndarray) -> np.ndarray:
    """q = uint8(255 * score), truncating like NumPy's astype."""
    return (scoremaps * 255).astype(np.uint8)


def check_cam_thresholds(cam_thresholds, cam_curve_interval) -> np.ndarray:
    """The thresholds of the sweep: np.arange(0, 1, interval) as the protocol, or an explicit list."""
    if cam_thresholds is None:
        interval = float(cam_curve_interval) if isinstance(cam_curve_interval, numbers.Real) else -1.0
        if not 0 < interval <= 1:
            raise ValueError(f"cam_curve_interval must lie in (0, 1], got {cam_curve_interval!r}")
        return np.arange(0, 1, interval)
    thresholds = np.asarray(cam_thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or not ((thresholds >= 0) & (thresholds <= 1)).all():
        raise ValueError(f"cam_thresholds must be a non-empty list of values in [0, 1], got {cam_thresholds!r}")
    return thresholds


def check_percentile(percentile) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    return float(percentile)


def threshold_levels(q: np.ndarray, cam_thresholds: np.ndarray, percentile: float) -> np.ndarray:
    """[N, T] integer levels int(threshold * reference) with the reference max(q) or a percentile.

    The product is taken in float64 and truncated, as the protocol's int(threshold * np.max(q))
    (PaS: np.percentile(q, 90), linear interpolation).
    """
    flat = q.reshape(len(q), -1)
    reference = flat.max(axis=1) if percentile == 100 else np.percentile(flat, percentile, axis=1)
    return np.floor(cam_thresholds[None, :] * reference.astype(np.float64)[:, None]).astype(np.int64)
