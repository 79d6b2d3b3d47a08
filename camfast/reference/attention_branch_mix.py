"""ABN's attention mechanism, the executable specification (Fukui et al., CVPR 2019)."""

import torch


def attention_branch_mix(g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The perception branch's input: out = g * m + g = (1 + m) * g, m broadcast over channels.

    g: Tensor[N, C, H, W] features; m: Tensor[N, 1, H, W] attention map -> Tensor[N, C, H, W].
    m is not detached: gradients reach both g and m, as in the authors' code.

    Example:
        >>> import torch, camfast
        >>> g, m = torch.randn(2, 3, 4, 4), torch.rand(2, 1, 4, 4)
        >>> torch.allclose(camfast.reference.attention_branch_mix(g, m), camfast.attention_branch_mix(g, m))
        True
    """
    return g * m + g
