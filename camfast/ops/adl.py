"""Attention-based dropout (ADL), the public function."""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._validation import check_bool, check_in_range, check_nchw


def _check_use_drop(use_drop, n: int) -> None:
    if use_drop is None or isinstance(use_drop, bool):
        return
    if not isinstance(use_drop, torch.Tensor):
        raise TypeError(f"use_drop must be None, a bool or a bool tensor, got {type(use_drop).__name__}")
    if use_drop.dtype != torch.bool or use_drop.shape not in ((), (n,)):
        raise ValueError(
            f"use_drop must be a bool tensor of shape () or (N,) = ({n},), got {use_drop.dtype} of shape "
            f"{tuple(use_drop.shape)}"
        )


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _draw_drop(x, drop_rate, use_drop, generator, per_sample) -> torch.Tensor:
    """The branch of every sample, bool Tensor[N] on x's device.

    As the authors' code: b = floor(U + drop_rate) with U ~ U[0, 1) from torch's generator (the
    default CPU one unless `generator` is given), one draw shared by the batch, or one per sample
    with per_sample. use_drop, when given, replaces the draw and consumes no random numbers.
    """
    n = x.shape[0]
    if use_drop is None:
        device = generator.device if generator is not None else torch.device("cpu")
        uniform = torch.rand([n] if per_sample else [], generator=generator, device=device)
        use_drop = torch.floor(uniform + drop_rate) > 0
    elif isinstance(use_drop, bool):
        return torch.full((n,), use_drop, dtype=torch.bool, device=x.device)
    return use_drop.to(x.device).expand(n)


def adl(
    x: torch.Tensor,
    drop_rate: float = 0.75,
    threshold: float = 0.8,
    training: bool = True,
    use_drop: bool | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    per_sample: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention-based dropout: x times a drop mask or an importance map, shared by all channels.

    Choe and Shim, "Attention-based Dropout Layer for Weakly Supervised Object Localization",
    CVPR 2019. With a = mean of x over channels ([N, 1, H, W]):

        importance = sigmoid(a)
        mask = [a < threshold * max over H, W of a[n]]      (NaN-propagating max, strict <)
        out = x * mask with probability drop_rate, else x * importance

    One branch is drawn per call for the whole batch, as in the authors' code (per_sample=True
    draws one per sample). The importance branch is differentiable through sigmoid(a); the mask
    is a constant. Samples whose map holds NaN drop every pixel.

    Args:
        x: Tensor[N, C, H, W], any strides (NCHW, channels_last and sliced are read in place).
        drop_rate: probability of the drop branch, in [0, 1].
        threshold: fraction of each sample's maximum attention above which pixels drop, in [0, 1].
        training: False returns x itself, as the layer does in evaluation.
        use_drop: forces the branch instead of drawing it: a bool, or a bool tensor of shape ()
            or (N,).
        generator: the torch.Generator to draw from (default: torch's default CPU generator).
        per_sample: one draw per sample instead of one per call.
        backend: None/"auto", "cpp", "triton" or "reference" (see camfast.show_config()).

    Returns:
        Tensor[N, C, H, W] in x's dtype, laid out like x; x itself when training is False.

    Example:
        >>> import torch, camfast
        >>> x = torch.tensor([[[[1., 2.], [3., 4.]]]]).expand(1, 2, 2, 2)  # two equal channels
        >>> camfast.adl(x, threshold=0.8, use_drop=True)[0, 0]  # drops where the mean >= 0.8 * 4
        tensor([[1., 2.],
                [3., 0.]])
        >>> camfast.adl(x, use_drop=False)[0, 0]                # times sigmoid(mean over channels)
        tensor([[0.7311, 1.7616],
                [2.8577, 3.9281]])
        >>> camfast.adl(x, training=False) is x
        True
    """
    check_nchw(x, "x")
    drop_rate = check_in_range(drop_rate, "drop_rate", 0.0, 1.0)
    threshold = check_in_range(threshold, "threshold", 0.0, 1.0)
    check_bool(training, "training")
    _check_use_drop(use_drop, x.shape[0])
    _check_generator(generator)
    check_bool(per_sample, "per_sample")
    chosen = _backend.choose(backend, x)
    if not training:
        return x
    drop = _draw_drop(x, drop_rate, use_drop, generator, per_sample)
    if chosen == "reference":
        return reference.adl(x, drop, threshold)
    return _backend.run("adl", chosen, x, drop, threshold)[0]
