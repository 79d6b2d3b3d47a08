"""Average Drop and Increase in Confidence (Chattopadhyay et al., Grad-CAM++, WACV 2018)."""

from __future__ import annotations

import torch

from ..cam._base import class_indices
from ._common import (check_batch_size, check_inputs, check_score, evaluation, forward_scores, score_jobs,
                      shape_result)

EPS = 1e-7  # torchcam's ClassificationMetric adds it to the denominator


def average_drop_increase(model, x, cams, targets=None, *, score="prob", batch_size: int = 32):
    """Per-image drop and increase in confidence when the input is multiplied by its CAM.

    With s the class score on x and s' the score on `cam * x` (the CAM resized to x bilinearly and
    shared by the channels, in the model's input space):

        drop = max(0, s - s') / (s + 1e-7)        increase = s < s'   (strict)

    Average Drop is 100 * mean(drop), Increase in Confidence 100 * mean(increase) (the paper's
    percentages). `score="prob"` (softmax, the paper's) or `"logit"` (with which the means equal
    torchcam 0.5.0's ClassificationMetric with its default logits_fn, epsilon included), or a
    callable mapping the model's output to [B, classes]. cams: [N, h, w] (or [N, T, h, w] with
    targets [N, T]); targets as the explainers (None: the predicted class). Images whose map holds
    a NaN get NaN drop. The masked inputs are scored in chunks of batch_size.

    Returns (drop, increase): float and bool tensors [N] (or [N, T]) on x's device.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    >>> drop, increase = average_drop_increase(model, torch.randn(2, 3, 8, 8), torch.rand(2, 4, 4))
    >>> drop.shape, increase.dtype
    (torch.Size([2]), torch.bool)
    """
    cams, table, class_axis = check_inputs(model, x, cams, targets)
    score = check_score(score)
    batch_size = check_batch_size(batch_size)
    n, t = cams.shape[:2]
    with evaluation(model):
        original = forward_scores(model, x, score, batch_size)
        classes = class_indices(table, original)  # [N, T]
        s = original.gather(1, classes)
        image = torch.arange(n, device=x.device).repeat_interleave(t)
        flat_cams = cams.reshape(n * t, 1, *cams.shape[2:]).to(x.dtype)
        masked = score_jobs(model, score, lambda part: flat_cams[part] * x[image[part]], classes.reshape(-1),
                            batch_size).view(n, t)
    drop = (s - masked).relu() / (s + EPS)
    drop = torch.where(cams.isnan().flatten(2).any(2), torch.nan, drop)
    return shape_result(drop, class_axis), shape_result(s < masked, class_axis)
