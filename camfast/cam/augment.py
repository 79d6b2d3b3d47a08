"""Test-time augmentation of any explainer (grad-cam's `aug_smooth=True`)."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

# grad-cam 1.5.7's default ttach transforms, in ttach's product order: HorizontalFlip x Multiply(0.9, 1, 1.1).
AUG_SMOOTH = tuple((flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))


def augmentations(aug_smooth) -> tuple[tuple[bool, float], ...]:
    """`aug_smooth`: False (none), True (grad-cam's six) or a sequence of (horizontal flip, factor).

    >>> augmentations([(True, 1.0)])
    ((True, 1.0),)
    >>> len(augmentations(True))
    6
    """
    if aug_smooth is False or aug_smooth is None:
        return ()
    if aug_smooth is True:
        return AUG_SMOOTH
    try:
        pairs = tuple((flip, factor) for flip, factor in aug_smooth)
    except (TypeError, ValueError):
        pairs = None
    if not pairs or not all(isinstance(f, bool) and isinstance(s, numbers.Real) and not isinstance(s, bool)
                            for f, s in pairs):
        raise TypeError("aug_smooth must be a bool or a non-empty sequence of (horizontal flip: bool, factor: "
                        f"float) pairs, got {aug_smooth!r}")
    return tuple((f, float(s)) for f, s in pairs)


def smooth(explain: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, pairs) -> torch.Tensor:
    """The mean over the augmentations of explain(augmented x), each map flipped back.

    As grad-cam does: each pass is a complete explainer call (its own normalisation, and with
    targets=None its own predicted class), and the mean is not renormalised.

    >>> x = torch.rand(1, 3, 4, 4)
    >>> torch.equal(smooth(lambda image: image[:, 0], x, [(True, 1.0)]), x[:, 0])
    True
    """
    total = None
    for flip, factor in pairs:
        image = x.flip(-1) if flip else x
        maps = explain(image * factor)
        maps = maps.flip(-1) if flip else maps
        total = maps if total is None else total + maps
    return total / len(pairs)
