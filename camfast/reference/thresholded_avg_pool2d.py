"""Thresholded average pooling, the executable specification (Bae et al., ECCV 2020)."""

import torch


def thresholded_avg_pool2d(x: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Mean of the entries of each (n, c) map above tau times the map's maximum.

    t = tau * max(x[n, c])  (NaN-propagating max)
    out[n, c] = sum(x[x > t]) / max(1, #{x > t and x > 0})

    x: Tensor[N, C, H, W] -> Tensor[N, C]. The comparison is strict; rows holding NaN, or +inf with
    tau > 0, select nothing and give 0, as in the authors' code. The selection and the count carry
    no gradient.

    Example:
        >>> import torch, camfast
        >>> x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
        >>> torch.allclose(camfast.reference.thresholded_avg_pool2d(x, 0.1), camfast.thresholded_avg_pool2d(x, 0.1))
        True
    """
    threshold = x.amax(dim=(2, 3), keepdim=True) * tau
    kept = torch.where(x > threshold, x, torch.zeros((), dtype=x.dtype, device=x.device))
    count = (kept > 0).sum(dim=(2, 3)).clamp_min(1)
    return kept.sum(dim=(2, 3)) / count
