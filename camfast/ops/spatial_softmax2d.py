"""Spatial softmax and spatial soft-argmax, the public functions."""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._validation import check_bool, check_nchw, check_positive


def spatial_softmax2d(x: torch.Tensor, temperature: float = 1.0, *, backend: str | None = None) -> torch.Tensor:
    """Softmax over the H*W values of each channel map of x / temperature.

    p[n, c, i, j] = exp(x[n, c, i, j] / T) / sum_{i', j'} exp(x[n, c, i', j'] / T)

    torch.softmax's semantics: a map holding NaN or +inf, and a map of only -inf, is all NaN; a
    single -inf gets probability 0. The temperature divides (robomimic's convention; kornia's
    `temperature` multiplies). Backward in closed form: grad_x = p * (g - sum(g * p)) / T.

    Args:
        x: Tensor[N, C, H, W], any strides (NCHW, channels_last and sliced are read in place).
        temperature: a finite number > 0.
        backend: None/"auto", "cpp", "triton" or "reference" (see camfast.show_config()).

    Returns:
        Tensor[N, C, H, W] in x's dtype, channels_last when x is.

    Example:
        >>> import torch, camfast
        >>> camfast.spatial_softmax2d(torch.tensor([[[[0., 0.], [0., 2.]]]]), temperature=2.0)
        tensor([[[[0.1749, 0.1749],
                  [0.1749, 0.4754]]]])
    """
    check_nchw(x, "x")
    temperature = check_positive(temperature, "temperature")
    chosen = _backend.choose(backend, x)
    if chosen == "reference":
        return reference.spatial_softmax2d(x, temperature)
    return _backend.run("spatial_softmax2d", chosen, x, temperature)[0]


def spatial_soft_argmax2d(
    x: torch.Tensor,
    temperature: float = 1.0,
    normalized_coordinates: bool = True,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Expected (x, y) position of each channel map under its spatial softmax (keypoints).

    With p the spatial softmax of x / T (see spatial_softmax2d):
    out[n, c] = (sum_ij p[n, c, i, j] * X[j], sum_ij p[n, c, i, j] * Y[i])

    X and Y run from -1 to 1 across the pixel centres (align_corners style: X[j] =
    linspace(-1, 1, W)[j]), or are pixel indices (X[j] = j) with normalized_coordinates=False. A
    width or height of 1 gives the coordinate 0 on that axis (the centre of [-1, 1]). Maps the
    softmax makes NaN give NaN. The softmax is never written: one fused pass per map.
    Backward in closed form: grad_x = p * (g_x (X - E_x) + g_y (Y - E_y)) / T.

    Args:
        x: Tensor[N, C, H, W], any strides.
        temperature: a finite number > 0.
        normalized_coordinates: coordinates in [-1, 1] (True) or in pixels (False).
        backend: None/"auto", "cpp", "triton" or "reference".

    Returns:
        Tensor[N, C, 2] in x's dtype: (expected x, expected y) per map.

    Example:
        >>> import torch, camfast
        >>> x = torch.full((1, 1, 3, 3), float("-inf"))  # weight exactly 0 on every backend
        >>> x[0, 0, 0, 2] = 0.0                        # a peak at the top-right pixel
        >>> camfast.spatial_soft_argmax2d(x)           # (x, y) in [-1, 1]
        tensor([[[ 1., -1.]]])
        >>> camfast.spatial_soft_argmax2d(x, normalized_coordinates=False)   # (column, row)
        tensor([[[2., 0.]]])
    """
    check_nchw(x, "x")
    temperature = check_positive(temperature, "temperature")
    normalized_coordinates = check_bool(normalized_coordinates, "normalized_coordinates")
    chosen = _backend.choose(backend, x)
    if chosen == "reference":
        return reference.spatial_soft_argmax2d(x, temperature, normalized_coordinates)
    # The op returns the coordinates in the accumulation dtype, which its backward reads.
    return _backend.run("spatial_soft_argmax2d", chosen, x, temperature, normalized_coordinates)[0].to(x.dtype)
