"""Thresholded average pooling (TAP), the public function."""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._validation import check_in_range, check_nchw


def thresholded_avg_pool2d(x: torch.Tensor, tau: float = 0.1, *, backend: str | None = None) -> torch.Tensor:
    """Average of the entries of each channel map that exceed tau times the map's maximum.

    Bae, Noh and Kim, "Rethinking Class Activation Mapping for Weakly Supervised Object
    Localization", ECCV 2020. Per (n, c) map, with m its NaN-propagating maximum:
    out[n, c] = sum(x[x > tau * m]) / max(1, #{x > tau * m and x > 0}).

    tau=0 is not global average pooling: it averages the positive entries. Maps holding NaN, or
    +inf with tau > 0, give 0, as the authors' code does. The gradient reaches the kept entries
    only: grad_x = grad_out / count where x > tau * m.

    Args:
        x: Tensor[N, C, H, W], any strides (NCHW, channels_last and sliced are read in place).
        tau: threshold ratio in [0, 1]; 0.1 is the released configuration.
        backend: None/"auto", "cpp", "triton" or "reference" (see camfast.show_config()).

    Returns:
        Tensor[N, C] in x's dtype.

    Example:
        >>> import torch, camfast
        >>> x = torch.tensor([[[[1., 2.], [3., 4.]]]])  # one 2x2 map, maximum 4
        >>> camfast.thresholded_avg_pool2d(x, tau=0.5)   # the mean of the entries above 2
        tensor([[3.5000]])
        >>> camfast.thresholded_avg_pool2d(torch.randn(8, 64, 7, 7)).shape
        torch.Size([8, 64])
    """
    check_nchw(x, "x")
    tau = check_in_range(tau, "tau", 0.0, 1.0)
    chosen = _backend.choose(backend, x)
    if chosen == "reference":
        return reference.thresholded_avg_pool2d(x, tau)
    return _backend.run("thresholded_avg_pool2d", chosen, x, tau)[0]
