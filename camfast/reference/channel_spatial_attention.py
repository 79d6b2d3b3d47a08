"""GGAM's channel-spatial attention, the executable specification (arXiv 2101.09666)."""

import torch


def channel_spatial_attention(a: torch.Tensor, s: torch.Tensor, spatial: str = "sigmoid") -> torch.Tensor:
    """Spatial attention from channel-weighted activations, applied to the activations.

    z[n, h, w] = sum_c s[n, c] * a[n, c, h, w]
    t = sigmoid(z)                     (spatial="sigmoid", the authors' GGAM code)
    t = softmax of z over the H*W map  (spatial="softmax", the authors' spatial-attention baselines)
    out = a * t                        (t broadcast over C; applied to a, not to s * a)

    a: Tensor[N, C, H, W]; s: Tensor[N, C] or [N, C, 1, 1] -> Tensor[N, C, H, W]. Gradients reach
    both a and s, as in the authors' graph.

    Example:
        >>> import torch, camfast
        >>> a, s = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
        >>> ref = camfast.reference.channel_spatial_attention(a, s, "softmax")
        >>> torch.allclose(ref, camfast.channel_spatial_attention(a, s, "softmax"))
        True
    """
    n, c, h, w = a.shape
    z = (a * s.reshape(n, c, 1, 1)).sum(dim=1, keepdim=True)
    if spatial == "sigmoid":
        t = torch.sigmoid(z)
    else:
        t = torch.softmax(z.reshape(n, 1, h * w), dim=-1).reshape(n, 1, h, w)
    return a * t

