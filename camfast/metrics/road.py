"""ROAD: RemOve And Debias (Rong et al., ICML 2022), with grad-cam 1.5.7's conventions."""

from __future__ import annotations

import dataclasses
import numbers

import torch

from .._validation import check_bool, check_choice, check_number
from ..cam._base import class_indices
from ._common import (check_batch_size, check_inputs, check_score, evaluation, forward_scores, score_jobs,
                      shape_result)
from .imputation import impute

ORDERS = ("morf", "lerf", "combined")
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclasses.dataclass(frozen=True)
class ROADResult:
    """Per-image ROAD values and the scores behind them (on the inputs' device).

    value: [N] (or [N, T]): mean over percentiles of (s' - s) for "morf" and "lerf", and
    (lerf - morf) / 2 for "combined" (grad-cam's ROADCombined). original: s, the score on x.
    morf, lerf: [N, P] scores s' after imputing at each percentile (None when not computed).

    Example:
        >>> import torch
        >>> import camfast.metrics as cm
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> result = cm.road(model, torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16), [0, 4])
        >>> result.value.shape, result.morf.shape, len(result.percentiles)
        (torch.Size([2]), torch.Size([2, 9]), 9)
    """

    value: torch.Tensor
    original: torch.Tensor
    morf: torch.Tensor | None
    lerf: torch.Tensor | None
    percentiles: tuple


def _check_percentiles(percentiles, legacy: bool) -> tuple:
    if percentiles == "auto":
        if not legacy:
            raise ValueError("percentiles='auto' reproduces grad-cam's Otsu threshold, which imputes the LEAST "
                             "relevant pixels under MoRF (the meaning is inverted); pass legacy=True to get it")
        return ("auto",)
    values = (percentiles,) if isinstance(percentiles, numbers.Real) else percentiles
    try:
        values = tuple(check_number(p, "percentiles") for p in values)
    except TypeError:
        raise TypeError(f"percentiles must be numbers in [0, 100] or 'auto', got {percentiles!r}") from None
    if not values or not all(0 <= p <= 100 for p in values):
        raise ValueError(f"percentiles must be a non-empty list of numbers in [0, 100], got {percentiles!r}")
    return values


def _percentile_thresholds(maps: torch.Tensor, percentiles: tuple) -> torch.Tensor:
    """[R, P] np.percentile(map, p) (linear interpolation, NumPy's lerp) of each row of maps [R, HW]."""
    ordered = maps.sort(dim=1).values
    last = maps.shape[1] - 1
    rank = torch.tensor(percentiles, dtype=torch.float64) / 100 * last
    low = rank.floor().long().clamp(0, last)
    high = (low + 1).clamp(max=last)
    gamma = (rank - low).to(maps.dtype).to(maps.device)
    a, b = ordered[:, low.to(maps.device)], ordered[:, high.to(maps.device)]
    diff = b - a
    return torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def _otsu_keep(maps: torch.Tensor) -> torch.Tensor:
    """grad-cam's percentile='auto': cv2 THRESH_OTSU on uint8(255 * map); keep the pixels above."""
    q = (maps * 255).to(torch.uint8).long()  # truncation, as np.uint8
    hist = torch.zeros(len(q), 256, dtype=torch.float64, device=q.device).scatter_add_(
        1, q, torch.ones_like(q, dtype=torch.float64))
    p = hist / q.shape[1]
    levels = torch.arange(256, dtype=torch.float64, device=q.device)
    q1 = p.cumsum(1)
    q2 = 1 - q1
    mu = (p * levels).sum(1, keepdim=True)
    mu1 = (p * levels).cumsum(1) / q1.clamp_min(1e-300)
    mu2 = (mu - q1 * mu1) / q2.clamp_min(1e-300)
    eps = torch.finfo(torch.float32).eps
    valid = (torch.minimum(q1, q2) >= eps) & (torch.maximum(q1, q2) <= 1 - eps)
    sigma = torch.where(valid, q1 * q2 * (mu1 - mu2) ** 2, 0)
    best = sigma.max(1, keepdim=True)
    threshold = torch.where(best.values > 0, best.indices, 0)  # cv2: the first maximum, 0 if none
    return q > threshold


def _keep_masks(cams: torch.Tensor, percentiles: tuple, least_first: bool) -> torch.Tensor:
    """[R, P, HW] True where a pixel is kept at each percentile (grad-cam's RemoveMostRelevantFirst:
    keep map < np.percentile(map, p); RemoveLeastRelevantFirst: the same on 1 - map)."""
    maps = 1 - cams if least_first else cams
    if percentiles == ("auto",):
        return _otsu_keep(maps)[:, None]
    return maps[:, None] < _percentile_thresholds(maps, percentiles)[..., None]


def road(model, x, cams, targets=None, *, order: str = "combined", percentiles=PERCENTILES, score="logit",
         noise: float = 0.01, generator: torch.Generator | None = None, legacy: bool = False,
         batch_size: int = 32) -> ROADResult:
    """ROAD with noisy linear imputation, as grad-cam 1.5.7's ROAD metrics.

    For each percentile p, MoRF (most relevant first) imputes the pixels whose CAM value is at
    least np.percentile(cam, p), i.e. about the top (100 - p)%, and LeRF the pixels whose 1 - cam
    is at least its percentile, about the bottom (100 - p)%. The imputed pixels are the weighted
    mean of their 8 neighbours (camfast.metrics.imputation) plus noise * N(0, 1) from `generator`.
    The perturbed images of all images, orders and percentiles are imputed on x's device and
    scored in chunks of batch_size, one forward a chunk; the original score is one forward.

    order: "morf" or "lerf" give the mean over percentiles of s' - s (grad-cam's
    ROAD*RelevantFirstAverage), "combined" gives (lerf - morf) / 2 (ROADCombined).
    score: "logit" (grad-cam's default ClassifierOutputTarget), "prob", "accuracy"
    (1 where the class is the top-1, the ROAD paper's measure) or a callable output -> [B, classes].
    legacy=True allows percentiles="auto", grad-cam's Otsu threshold, whose MoRF keeps the most
    relevant pixels and imputes the least relevant ones (the inverse of its name).

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    >>> result = road(model, torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8), percentiles=[20, 80], noise=0)
    >>> result.value.shape, result.morf.shape
    (torch.Size([2]), torch.Size([2, 2]))
    """
    check_choice(order, "order", ORDERS)
    check_bool(legacy, "legacy")
    percentiles = _check_percentiles(percentiles, legacy)
    noise = check_number(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    cams, table, class_axis = check_inputs(model, x, cams, targets)
    score = check_score(score, ("logit", "prob", "accuracy"))
    batch_size = check_batch_size(batch_size)
    n, t, height, width = cams.shape
    orders = {"morf": (False,), "lerf": (True,), "combined": (False, True)}[order]
    x = x.detach()
    flat = cams.reshape(n * t, height * width)
    with evaluation(model):
        original = forward_scores(model, x, score, batch_size)
        classes = class_indices(table, original)
        keep = torch.stack([_keep_masks(flat, percentiles, least) for least in orders], 1)  # [R, O, P, HW]
        jobs = keep.shape[1] * keep.shape[2]
        row = torch.arange(n * t, device=x.device).repeat_interleave(jobs)
        keep = keep.reshape(-1, height, width)

        def build(part):
            return impute(x[row[part] // t], ~keep[part], noise, generator)

        perturbed = score_jobs(model, score, build, classes.reshape(-1)[row], batch_size)
    s = original.gather(1, classes)
    curves = perturbed.view(n, t, len(orders), len(percentiles))
    diffs = (curves - s[..., None, None]).mean(-1)
    value = diffs[:, :, 0] if len(orders) == 1 else (diffs[:, :, 1] - diffs[:, :, 0]) / 2
    by_order = dict(zip(("lerf",) if order == "lerf" else ("morf", "lerf"), curves.unbind(2)))
    return ROADResult(shape_result(value, class_axis), shape_result(s, class_axis),
                      *(shape_result(by_order[o], class_axis) if o in by_order else None for o in ("morf", "lerf")),
                      percentiles)

