"""Spatial softmax and soft-argmax, the executable specification (Finn, Levine et al.; kornia;
robomimic). The temperature divides, as in robomimic and the papers."""

import torch


def spatial_softmax2d(x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over the H*W values of each (n, c) map of x / temperature.

    p[n, c] = exp(x[n, c] / T) / sum(exp(x[n, c] / T)),  computed as torch.softmax computes it:
    a map holding NaN or +inf, and a map of only -inf, is all NaN; a single -inf gets 0.

    x: Tensor[N, C, H, W] -> Tensor[N, C, H, W].

    Example:
        >>> import torch, camfast
        >>> x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
        >>> torch.allclose(camfast.reference.spatial_softmax2d(x, 0.5), camfast.spatial_softmax2d(x, 0.5))
        True
    """
    return torch.softmax((x / temperature).flatten(2), dim=-1).view_as(x)


def coordinates(size: int, normalized: bool, like: torch.Tensor) -> torch.Tensor:
    """Pixel centres along one axis: -1 to 1 (align_corners style), or 0 .. size - 1 in pixels.

    A normalized axis of size 1 has the single coordinate 0 (the centre of [-1, 1]).

    Example:
        >>> import torch
        >>> from camfast.reference.spatial_softmax2d import coordinates
        >>> coordinates(3, True, torch.zeros(1)), coordinates(3, False, torch.zeros(1))
        (tensor([-1.,  0.,  1.]), tensor([0., 1., 2.]))
    """
    if not normalized:
        return torch.arange(size, dtype=like.dtype, device=like.device)
    if size == 1:
        return torch.zeros(1, dtype=like.dtype, device=like.device)
    return torch.linspace(-1.0, 1.0, size, dtype=like.dtype, device=like.device)


def spatial_soft_argmax2d(
    x: torch.Tensor, temperature: float = 1.0, normalized_coordinates: bool = True
) -> torch.Tensor:
    """Expected (x, y) position under the spatial softmax of each (n, c) map.

    out[n, c] = (sum_ij p[n, c, i, j] * X[j], sum_ij p[n, c, i, j] * Y[i]) with p the spatial
    softmax of x / T and X, Y from `coordinates`. x: Tensor[N, C, H, W] -> Tensor[N, C, 2].

    Example:
        >>> import torch, camfast
        >>> x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
        >>> torch.allclose(camfast.reference.spatial_soft_argmax2d(x), camfast.spatial_soft_argmax2d(x))
        True
    """
    p = spatial_softmax2d(x, temperature)
    xs = coordinates(x.shape[3], normalized_coordinates, x)
    ys = coordinates(x.shape[2], normalized_coordinates, x)
    expected_x = (p * xs).sum(dim=(2, 3))
    expected_y = (p * ys[:, None]).sum(dim=(2, 3))
    return torch.stack((expected_x, expected_y), dim=-1)
