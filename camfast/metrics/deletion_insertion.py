"""Deletion and Insertion (Petsiuk et al., RISE, BMVC 2018), with the RISE authors' and torchcam's
conventions as presets."""

from __future__ import annotations

import dataclasses
import math
import numbers

import torch
import torch.nn.functional as F

from .._validation import check_choice
from ..cam._base import class_indices
from ._common import (check_batch_size, check_inputs, check_score, evaluation, forward_scores, score_jobs,
                      shape_result)

PRESETS = ("rise", "torchcam")
RISE_STEP = 224  # pixels a step in the RISE authors' evaluation (one row of a 224 x 224 image)
RISE_BLUR = (11, 5.0)  # their insertion baseline: gkern(klen=11, nsig=5)


@dataclasses.dataclass(frozen=True)
class DeletionInsertionResult:
    """Per-image areas under the curves and the curves themselves (on the inputs' device).

    Example:
        >>> import torch
        >>> import camfast.metrics as cm
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> result = cm.deletion_insertion(model, torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16), [0, 4])
        >>> result.deletion_auc.shape, result.insertion_curve.shape, result.fractions.shape
        (torch.Size([2]), torch.Size([2, 3]), torch.Size([3]))
    """

    deletion_auc: torch.Tensor  # [N] (or [N, T])
    insertion_auc: torch.Tensor
    deletion_curve: torch.Tensor  # [N, K] (or [N, T, K]): the score after deleting fractions[k]
    insertion_curve: torch.Tensor  # the score after inserting fractions[k]
    fractions: torch.Tensor  # [K]: 0, step / P, 2 step / P, ..., 1


def rise_blur_kernel(size: int = RISE_BLUR[0], sigma: float = RISE_BLUR[1]) -> torch.Tensor:
    """The RISE authors' gkern: scipy.ndimage.gaussian_filter(delta, sigma) on a size x size array.

    gaussian_filter uses a kernel of radius int(4 sigma + 0.5), wider than the array, with the
    'reflect' boundary (d c b a | a b c d): each output sums the Gaussian weights of the delta and
    of all its mirror images, which repeat with period 2 * size. Returns float32 [size, size].
    """
    radius = int(4 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 / sigma**2 * offsets**2)
    weights /= weights.sum()
    centre, period = size // 2, 2 * size
    images = [c + k * period for c in (centre, -1 - centre) for k in range(-2, 3)]  # delta, mirrors
    row = torch.zeros(size, dtype=torch.float64)
    for i in range(size):
        row[i] = sum(weights[q - i + radius] for q in images if abs(q - i) <= radius)
    return torch.outer(row, row).float()


def rise_blur(x: torch.Tensor) -> torch.Tensor:
    """The RISE insertion baseline: each channel convolved with gkern(11, 5), zero padding 5.

    Example:
        >>> import torch
        >>> from camfast.metrics import rise_blur
        >>> rise_blur(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """
    kernel = rise_blur_kernel().to(x.device, x.dtype)
    c, size = x.shape[1], kernel.shape[-1]
    return F.conv2d(x, kernel.expand(c, 1, size, size), padding=size // 2, groups=c)


def _baselines(x: torch.Tensor, preset: str, baseline) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(deletion baseline, insertion baseline), each [N, C, H, W] or None for zeros."""
    if baseline is None:
        return (None, rise_blur(x)) if preset == "rise" else (None, None)
    made = baseline(x) if callable(baseline) else baseline
    if not isinstance(made, torch.Tensor):
        raise TypeError(f"baseline must be None, a tensor or a callable returning one, got {type(made).__name__}")
    try:
        made = torch.broadcast_to(made.to(x), x.shape)
    except RuntimeError:
        raise ValueError(f"baseline must broadcast to x's shape {tuple(x.shape)}, got {tuple(made.shape)}") from None
    return made, made


def _counts(pixels: int, preset: str, steps) -> list[int]:
    """Pixels perturbed at each point: 0, step, 2 step, ... below P, then P."""
    if steps is None:
        step = RISE_STEP if preset == "rise" else math.ceil(pixels / 20)  # torchcam: steps=20
    elif isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be None or an int >= 1, got {steps!r}")
    else:
        step = math.ceil(pixels / steps)
    return [*range(0, pixels, step), pixels]


def deletion_insertion(model, x, cams, targets=None, *, preset: str = "rise", steps=None, baseline=None,
                       score=None, batch_size: int = 32) -> DeletionInsertionResult:
    """Deletion and insertion curves and their areas, per image.

    Pixels are ranked by the CAM (resized to x bilinearly), highest first; ties are broken
    stably, the lower flat index (row-major) first. Deletion replaces the first c pixels of the
    ranking by the deletion baseline, insertion puts the first c pixels of x into the insertion
    baseline, all channels of a pixel together, for c = 0, step, 2 step, ... and finally all P
    pixels. The curves hold the target class's score at each point.

    preset="rise": the RISE authors' evaluation (`evaluation.py`, `CausalMetric`): step = 224
    pixels (steps=None; `steps=n` takes ceil(P / n) pixels a step), zero deletion baseline, their
    blurred insertion baseline (each channel convolved with gkern(11, 5), zero padding), softmax
    scores and the area on a uniform grid, (sum(a) - a_0 / 2 - a_K / 2) / K.
    preset="torchcam": torchcam 0.5.0's DeletionInsertionMetric: step = ceil(P / steps) with
    steps=20, zeros for both baselines, its default logits_fn=None (raw logits) and the area by
    torch.trapezoid over the actual fractions (the last interval may be shorter).

    baseline: a tensor broadcastable to x or a callable x -> tensor, replacing both baselines.
    score: "prob", "logit" or a callable output -> [B, classes]; None takes the preset's.
    All perturbed inputs of all images are built on x's device and scored in chunks of
    batch_size, one forward a chunk. Images whose map holds a NaN get NaN areas.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    >>> result = deletion_insertion(model, torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8), preset="torchcam")
    >>> result.deletion_auc.shape, result.fractions.tolist()[:3]
    (torch.Size([2]), [0.0, 0.0625, 0.125])
    """
    check_choice(preset, "preset", PRESETS)
    cams, table, class_axis = check_inputs(model, x, cams, targets)
    score = check_score({"rise": "prob", "torchcam": "logit"}[preset] if score is None else score)
    batch_size = check_batch_size(batch_size)
    n, t, height, width = cams.shape
    pixels = height * width
    counts = _counts(pixels, preset, steps)
    x = x.detach()
    with evaluation(model):
        removed, inserted = _baselines(x, preset, baseline)
        original = forward_scores(model, x, score, batch_size)
        classes = class_indices(table, original)  # [N, T]
        order = cams.reshape(n * t, pixels).argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=x.device).expand_as(order))
        deletion, insertion = _curves(model, score, x, removed, inserted, ranks // counts[1],
                                      len(counts) - 1, classes.reshape(-1), batch_size)
    s = original.gather(1, classes).reshape(-1, 1)
    deletion = torch.cat([s, deletion], 1).view(n, t, len(counts))
    insertion = torch.cat([insertion, s], 1).view(n, t, len(counts))
    fractions = torch.tensor(counts, dtype=torch.float32, device=x.device) / pixels
    if preset == "rise":
        auc = lambda a: (a.sum(-1) - a[..., 0] / 2 - a[..., -1] / 2) / (a.shape[-1] - 1)  # noqa: E731
    else:
        auc = lambda a: torch.trapezoid(a, fractions.to(a.dtype), dim=-1)  # noqa: E731
    invalid = cams.isnan().flatten(2).any(2)
    result = [torch.where(invalid, torch.nan, auc(deletion)), torch.where(invalid, torch.nan, auc(insertion))]
    return DeletionInsertionResult(*(shape_result(v, class_axis) for v in (*result, deletion, insertion)),
                                   fractions)


def _curves(model, score, x, removed, inserted, point, k, classes, batch_size):
    """Deletion points 1..K and insertion points 0..K-1 of every (image, class) row of `point`.

    point [R, P]: the curve point at which each pixel is perturbed (its rank // step), so the first c_k
    pixels of the ranking are those with point < k. A job is (row, curve, k): curve 0 replaces
    those pixels by the deletion baseline, curve 1 keeps only them from x, over the insertion
    baseline (None: zeros). Where both baselines are the same, insertion's point 0 (no pixel of x)
    is deletion's point K and is scored once, as torchcam does.
    """
    rows = len(point)
    point = point.to(torch.uint8 if k < 256 else torch.int32)  # 1 byte a pixel to gather per job
    shared = removed is inserted
    first_insertion = 1 if shared else 0
    level = torch.cat([torch.arange(1, k + 1), torch.arange(first_insertion, k)]).to(x.device, point.dtype)
    curve = torch.cat([torch.zeros(k, dtype=torch.bool), torch.ones(k - first_insertion, dtype=torch.bool)])
    jobs = len(level)
    job_row = torch.arange(rows, device=x.device).repeat_interleave(jobs)
    job_inserts = curve.to(x.device).repeat(rows)
    job_level = level.repeat(rows)
    job_image = job_row // max(rows // max(len(x), 1), 1)  # rows are (image, class) pairs
    flat_x = x.flatten(2)

    def pick(baseline, image):  # the jobs' baselines [B, C, P], or a zero that broadcasts
        return baseline.flatten(2).index_select(0, image) if baseline is not None else x.new_zeros(())

    def build(part):
        image, inserts = job_image[part], job_inserts[part, None]
        # The baseline replaces x at the first c_k pixels for deletion and at the others for insertion.
        replaced = ((point[job_row[part]] < job_level[part, None]) != inserts)[:, None]  # [B, 1, P]
        out = flat_x.index_select(0, image)
        if shared and removed is None:  # zero baselines: two passes over the chunk, not five
            return out.masked_fill_(replaced, 0).view(-1, *x.shape[1:])
        fill = pick(removed, image) if shared else torch.where(inserts[..., None], pick(inserted, image),
                                                               pick(removed, image))
        return torch.where(replaced, fill, out).view(-1, *x.shape[1:])

    scores = score_jobs(model, score, build, classes[job_row], batch_size).view(rows, jobs)
    deletion, insertion = scores[:, :k], scores[:, k:]
    if shared:
        insertion = torch.cat([deletion[:, -1:], insertion], 1)
    return deletion, insertion
