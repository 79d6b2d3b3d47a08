"""Vision transformers: turning a layer's tokens into maps [N, K, h, w].

Every explainer takes `reshape_transform=`: a callable mapping the target layer's output to
[N, K, h, w] (as in grad-cam and torchcam), or `"tokens"` / a `TokenGrid`, which infers the grid
from the token count and the input's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


class TokenGrid:
    """Tokens to maps: [N, L, D] (prefix tokens first: CLS, registers) or [N, h, w, D] (channels
    last, as torchvision's Swin) -> [N, D, h, w].

    For [N, L, D] the grid (h, w) and the number p of prefix tokens are found from L and the input
    size (H, W): the candidates are the grids of a patch stride s that divides both H and W,
    h = H / s and w = W / s, with p = L - h w and 0 <= p < h w. When no stride fits that way,
    the grids (floor(H / s), floor(W / s)) and (ceil(H / s), ceil(W / s)) of every stride are
    tried. Exactly one candidate must remain, else a ValueError names them: pass `prefix_tokens`
    or `grid` then (a ViT with 4 registers at 224 x 224 and patch 14 has 261 tokens, which also
    fit a 14 x 14 grid behind 65 prefix tokens). Prefix tokens are dropped from the maps.

    >>> grid = TokenGrid()
    >>> grid(torch.rand(2, 1 + 14 * 14, 32), (224, 224)).shape  # ViT-B/16: CLS + 14 x 14
    torch.Size([2, 32, 14, 14])
    >>> grid.layout(197, (224, 224))
    (1, (14, 14))
    """

    def __init__(self, prefix_tokens: int | None = None, grid: Sequence[int] | None = None):
        if prefix_tokens is not None and (isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int)
                                          or prefix_tokens < 0):
            raise ValueError(f"prefix_tokens must be None or an int >= 0, got {prefix_tokens!r}")
        if grid is not None and (len(grid) != 2 or not all(isinstance(g, int) and g > 0 for g in grid)):
            raise ValueError(f"grid must be None or two positive ints (h, w), got {grid!r}")
        self.prefix_tokens = prefix_tokens
        self.grid = None if grid is None else tuple(grid)

    def __call__(self, tokens: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() not in (3, 4):
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise TypeError(f"reshape_transform='tokens' needs the target layer to output [N, L, D] or "
                            f"[N, h, w, D] tokens, got {got}")
        if tokens.dim() == 4:
            return tokens.permute(0, 3, 1, 2)
        prefix, (h, w) = self.layout(tokens.shape[1], image_size)
        return tokens[:, prefix:].unflatten(1, (h, w)).permute(0, 3, 1, 2)

    def layout(self, length: int, image_size: Sequence[int]) -> tuple[int, tuple[int, int]]:
        """(prefix tokens, (h, w)) for `length` tokens of an image of `image_size` (H, W)."""
        if self.grid is not None:
            prefix = length - self.grid[0] * self.grid[1]
            if prefix < 0 or (self.prefix_tokens is not None and prefix != self.prefix_tokens):
                raise ValueError(f"grid {self.grid} with prefix_tokens={self.prefix_tokens} does not fit "
                                 f"{length} tokens")
            return prefix, self.grid
        found = _candidates(length, image_size, self.prefix_tokens, exact=True) \
            or _candidates(length, image_size, self.prefix_tokens, exact=False)
        if len(found) != 1:
            what = "no grid fits" if not found else f"the grid is ambiguous: {sorted(found)}"
            raise ValueError(f"reshape_transform='tokens': {what} for {length} tokens of a "
                             f"{tuple(image_size)} image (as (prefix tokens, (h, w))); give "
                             "TokenGrid(prefix_tokens=...) or TokenGrid(grid=(h, w))")
        return found.pop()

    def __repr__(self) -> str:
        return f"TokenGrid(prefix_tokens={self.prefix_tokens}, grid={self.grid})"


def _candidates(length: int, image_size: Sequence[int], prefix: int | None, exact: bool) -> set:
    height, width = image_size
    found = set()
    for stride in range(1, max(height, width) + 1):
        if exact:
            if height % stride or width % stride:
                continue
            grids = {(height // stride, width // stride)}
        else:
            grids = {(height // stride, width // stride), (-(-height // stride), -(-width // stride))}
        for h, w in grids:
            p = length - h * w if h and w else -1
            if 0 <= p < h * w and (prefix is None or p == prefix):
                found.add((p, (h, w)))
    return found


def resolve_transform(transform) -> Callable | None:
    """None, a callable(tokens) -> [N, K, h, w], "tokens" or a TokenGrid (checked).

    >>> resolve_transform("tokens")
    TokenGrid(prefix_tokens=None, grid=None)
    """
    if transform is None or isinstance(transform, TokenGrid):
        return transform
    if isinstance(transform, str):
        if transform != "tokens":
            raise ValueError(f"reshape_transform must be None, a callable, 'tokens' or a TokenGrid, got {transform!r}")
        return TokenGrid()
    if not callable(transform):
        raise TypeError("reshape_transform must be None, a callable, 'tokens' or a TokenGrid, "
                        f"got {type(transform).__name__}")
    return transform


def apply_transform(transform, output: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
    """The layer's output as maps [N, K, h, w] (a TokenGrid also needs the input's size).

    >>> apply_transform(TokenGrid(), torch.rand(2, 17, 8), (32, 32)).shape
    torch.Size([2, 8, 4, 4])
    """
    maps = transform(output, image_size) if isinstance(transform, TokenGrid) else transform(output)
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[0] != output.shape[0]:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"reshape_transform must return a Tensor[N, K, h, w] with N = {output.shape[0]}, got {got}")
    return maps


def positions(transform, output_shape: Sequence[int], image_size: Sequence[int]) -> torch.Tensor:
    """Where each entry of the maps comes from: [K, h, w] flat indices into one image's layer
    output, found by passing a tensor of positions through the transform. Raises unless the
    transform only rearranges (reshape, permute, slice), as the gradient methods and AblationCAM
    need: they map channels and gradients back to the layer's output through these indices.

    >>> positions(TokenGrid(), (1, 5, 2), (4, 4))[:, 0, 0]  # one CLS token, 2 x 2 grid, 2 channels
    tensor([2, 3])
    """
    shape = (1, *output_shape[1:])
    probe = torch.arange(math.prod(shape), dtype=torch.float64).view(shape)
    mapped = apply_transform(transform, probe, image_size)[0]
    if not torch.equal(mapped, mapped.round()) or mapped.min() < 0 or mapped.max() >= probe.numel():
        raise ValueError("reshape_transform must only rearrange the layer's output (reshape, permute, slice): "
                         "gradients and ablations are mapped back to the output through it")
    return mapped.long()


def channel_axis(transform, output_shape: Sequence[int], image_size: Sequence[int]) -> tuple[int, torch.Tensor]:
    """Where map channel k lives in the layer's output: (axis, index [K]), so that the output's
    entries with index[k] along `axis` are exactly those of channel k, at every position (prefix
    tokens included).

    >>> channel_axis(TokenGrid(), (1, 5, 2), (4, 4))
    (2, tensor([0, 1]))
    """
    shape = output_shape[1:]
    mapped = positions(transform, output_shape, image_size).flatten(1)  # [K, h w]
    for axis in range(len(shape)):
        coord = torch.div(mapped, math.prod(shape[axis + 1:]), rounding_mode="floor") % shape[axis]
        if (coord == coord[:, :1]).all() and len(set(coord[:, 0].tolist())) == coord.shape[0]:
            return axis + 1, coord[:, 0]
    raise ValueError("reshape_transform mixes channels of the layer's output: AblationCAM cannot ablate them")
