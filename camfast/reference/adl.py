"""Attention-based dropout, the executable specification (Choe and Shim, CVPR 2019)."""

import torch


def adl(x: torch.Tensor, drop: torch.Tensor, threshold: float = 0.8) -> torch.Tensor:
    """x times one [N, 1, H, W] map per sample: the drop mask where `drop`, else the importance map.

    a = mean of x over channels
    importance = sigmoid(a)                          (differentiable, nothing detached)
    mask = [a < threshold * max over H, W of a]      (per-sample NaN-propagating max, strict <)

    x: Tensor[N, C, H, W]; drop: bool Tensor[N] (or a bool scalar for the whole batch), the branch
    the caller drew. The mask carries no gradient. Unlike the authors' blend
    (1 - b) * importance + b * mask, the branch is selected, so a NaN in the importance map does
    not leak into a drop-branch output (or its gradient) through 0 * NaN.

    Example:
        >>> import torch, camfast
        >>> x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
        >>> drop = torch.tensor([True, False])              # sample 0 drops, sample 1 takes importance
        >>> ours = camfast.adl(x, threshold=0.8, use_drop=drop)
        >>> torch.allclose(camfast.reference.adl(x, drop, 0.8), ours)
        True
    """
    drop = drop.to(device=x.device, dtype=torch.bool).reshape(-1, 1, 1, 1)
    a = x.mean(dim=1, keepdim=True)
    # The branch not taken contributes nothing, not even a NaN gradient through 0 * sigmoid'(NaN).
    importance = torch.sigmoid(a.masked_fill(drop, 0))
    mask = (a < a.amax(dim=(1, 2, 3), keepdim=True) * threshold).to(x.dtype)
    return x * torch.where(drop, mask, importance)
