"""ABN's attention mix, the public function."""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._precision import promoted
from .._validation import check_float_tensor, check_nchw, check_same_device, check_shape


def attention_branch_mix(g: torch.Tensor, m: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """The input of ABN's perception branch: (1 + m) * g, the attention map broadcast over C.

    Fukui et al., "Attention Branch Network: Learning of Attention Mechanism for Visual
    Explanation", CVPR 2019 (the authors' code computes g * m + g). m is not detached:
    grad_g = grad * (1 + m), grad_m = sum_c grad[c] * g[c].

    Args:
        g: features Tensor[N, C, H, W], any strides (NCHW, channels_last and sliced in place).
        m: attention map Tensor[N, 1, H, W], any strides, on g's device.
        backend: None/"auto", "cpp", "triton" or "reference" (see camfast.show_config()).

    Returns:
        Tensor[N, C, H, W], channels_last when g is, in the dtype torch's type promotion gives g
        and m (under torch.autocast: the autocast dtype, float64 inputs excepted).

    Example:
        >>> import torch, camfast
        >>> g = torch.ones(1, 2, 2, 2)
        >>> m = torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]]])
        >>> camfast.attention_branch_mix(g, m)[0, 1]   # (1 + m) * g, every channel alike
        tensor([[1.0000, 2.0000],
                [1.5000, 1.0000]])
    """
    check_nchw(g, "g")
    check_float_tensor(m, "m", 4, "[N, 1, H, W]")
    n, _, h, w = g.shape
    check_shape(m, "m", (n, 1, h, w), "[N, 1, H, W] of g")
    check_same_device({"g": g, "m": m})
    g, m = promoted(g, m)
    chosen = _backend.choose(backend, g, m)
    if chosen == "reference":
        return reference.attention_branch_mix(g, m)
    return _backend.run("attention_branch_mix", chosen, g, m)
