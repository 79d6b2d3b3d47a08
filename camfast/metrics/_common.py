"""What the faithfulness metrics share: argument checks, class scores, the chunked forward.

Every metric scores perturbed copies of the inputs. A perturbation is a "job" (an image, a class
and a perturbation level); jobs of different images are batched together into chunks of
`batch_size` inputs, each chunk is built on the inputs' device and scored with one forward, and
the scores are written into a device tensor by index, so nothing is read back to the host per
image or per step.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable

import torch
from torch import nn

from .._validation import check_nchw, check_same_device
from ..cam._base import parse_targets, resize

SCORES = ("prob", "logit")


def check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return model


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return int(batch_size)


def check_score(score, choices: tuple[str, ...] = SCORES):
    """A score name from `choices`, or a callable mapping the model's output to [B, classes]."""
    if callable(score) or score in choices:
        return score
    raise ValueError(f"score must be one of {choices} or a callable (output -> Tensor[B, classes]), got {score!r}")


def check_inputs(model, x, cams, targets) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Validate (model, x, cams, targets); cams come back as float [N, T, H, W] at x's size.

    targets as the explainers: None (the predicted class), an int, N ints or an integer tensor
    [N] (one class per image), N lists of T ints or a tensor [N, T] (T classes per image: cams
    are then [N, T, h, w] and the results [N, T]).

    cams may be [N, h, w] (or [N, T, h, w] with targets [N, T]) at any resolution: they are resized
    to x's size bilinearly (align_corners=False), as torchcam's metrics do.
    """
    check_model(model)
    check_nchw(x, "x")
    if not isinstance(cams, torch.Tensor) or not cams.dtype.is_floating_point:
        got = cams.dtype if isinstance(cams, torch.Tensor) else type(cams).__name__
        raise TypeError(f"cams must be a floating-point tensor [N, h, w] or [N, T, h, w], got {got}")
    param = next(model.parameters(), None)
    check_same_device({"x": x, "cams": cams, **({"model": param} if param is not None else {})})
    table, class_axis = parse_targets(targets, x.shape[0])
    expected = 4 if class_axis else 3
    if cams.dim() != expected or cams.shape[0] != x.shape[0] or 0 in cams.shape[-2:]:
        meaning = "[N, T, h, w] (targets are [N, T])" if class_axis else "[N, h, w]"
        raise ValueError(f"cams must be {meaning} with N = {x.shape[0]} and h, w > 0, got {tuple(cams.shape)}")
    if class_axis and cams.shape[1] != table.shape[1]:
        raise ValueError(f"cams must hold one map per target class (T = {table.shape[1]}), got {cams.shape[1]}")
    cams = cams if class_axis else cams[:, None]
    return resize(cams.detach(), x.shape[2:]), table, class_axis


def class_scores(output, score) -> torch.Tensor:
    """[B, classes] scores from the model's output: softmax, the logits, 1 at the top-1 class
    ("accuracy") or the user's callable."""
    if callable(score):
        output = score(output)
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise TypeError(f"the model (or score=) must give a Tensor[B, classes], got {got}")
    wide = torch.promote_types(output.dtype, torch.float32)
    if score == "accuracy":
        return torch.zeros_like(output, dtype=wide).scatter_(1, output.argmax(1, keepdim=True), 1)
    return output.softmax(1, dtype=wide) if score == "prob" else output.to(wide)


@contextlib.contextmanager
def evaluation(model: nn.Module):
    """Eval mode and inference mode for the metric's forwards; train flags restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.inference_mode():
            yield
    finally:
        for m, training in modes:
            m.training = training


def forward_scores(model: nn.Module, x: torch.Tensor, score, batch_size: int) -> torch.Tensor:
    """[N, classes] scores of x, in chunks of batch_size."""
    return torch.cat([class_scores(model(chunk), score) for chunk in x.split(batch_size)])


def score_jobs(model: nn.Module, score, build: Callable[[slice], torch.Tensor], classes: torch.Tensor,
               batch_size: int) -> torch.Tensor:
    """Scores of len(classes) perturbed inputs: `build(slice)` makes the chunk's inputs on the
    device, one forward scores it, and the class of each job is picked out by index."""
    parts = []
    for start in range(0, len(classes), batch_size):
        part = slice(start, min(start + batch_size, len(classes)))
        scores = class_scores(model(build(part)), score)
        parts.append(scores.gather(1, classes[part, None])[:, 0])
    return torch.cat(parts) if parts else torch.empty(0, device=classes.device)


def shape_result(values: torch.Tensor, class_axis: bool) -> torch.Tensor:
    """[N, T, ...] -> [N, ...] when the caller gave one class per image."""
    return values if class_axis else values[:, 0]
