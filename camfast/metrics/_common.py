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
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_nchw, check_same_device

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


def check_targets(targets, n: int) -> tuple[torch.Tensor | None, bool]:
    """targets -> (LongTensor [N, T] on the CPU, or None for the predicted class; whether the
    caller asked for a class axis, i.e. gave [N, T]).

    As the explainers: None takes the predicted class; an int is used for every image; N ints or an
    integer tensor [N] give one class per image; N lists of T ints or an integer tensor [N, T] give
    T classes per image (cams are then [N, T, h, w] and results [N, T]).
    """
    if targets is None:
        return None, False
    if isinstance(targets, numbers.Integral) and not isinstance(targets, bool):
        return torch.full((n, 1), int(targets), dtype=torch.long), False
    if isinstance(targets, torch.Tensor):
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool \
                or targets.dim() not in (1, 2):
            raise TypeError(f"targets must be an integer tensor [N] or [N, T], got {targets.dtype} "
                            f"of shape {tuple(targets.shape)}")
        table, class_axis = targets.long().reshape(targets.shape[0], -1), targets.dim() == 2
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        try:
            table = torch.tensor(list(targets), dtype=torch.long)
        except (TypeError, ValueError):
            raise TypeError("targets must be None, an int, N ints, N lists of T ints, "
                            "or an integer tensor [N] or [N, T]") from None
        if table.dim() not in (1, 2) or any(isinstance(t, bool) for t in targets):
            raise TypeError("targets must be None, an int, N ints, N lists of T ints, "
                            "or an integer tensor [N] or [N, T]")
        table, class_axis = table.reshape(len(targets), -1), table.dim() == 2
    else:
        raise TypeError(f"targets must be None, an int, N ints, N lists of T ints, or an integer tensor "
                        f"[N] or [N, T], got {type(targets).__name__}")
    if table.shape[0] != n:
        raise ValueError(f"targets must hold classes for each of the {n} images, got {table.shape[0]}")
    if table.shape[1] == 0:
        raise ValueError("targets [N, T] must hold at least one class per image, got T = 0")
    return table, class_axis


def check_inputs(model, x, cams, targets) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Validate (model, x, cams, targets); cams come back as float [N, T, H, W] at x's size.

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
    table, class_axis = check_targets(targets, x.shape[0])
    expected = 4 if class_axis else 3
    if cams.dim() != expected or cams.shape[0] != x.shape[0] or 0 in cams.shape[-2:]:
        meaning = "[N, T, h, w] (targets are [N, T])" if class_axis else "[N, h, w]"
        raise ValueError(f"cams must be {meaning} with N = {x.shape[0]} and h, w > 0, got {tuple(cams.shape)}")
    if class_axis and cams.shape[1] != table.shape[1]:
        raise ValueError(f"cams must hold one map per target class (T = {table.shape[1]}), got {cams.shape[1]}")
    cams = cams if class_axis else cams[:, None]
    return resize_to(cams.detach(), x.shape[2:]), table, class_axis


def resize_to(cams: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[N, T, h, w] -> [N, T, H, W], bilinear with align_corners=False (a no-op at the size)."""
    if tuple(cams.shape[-2:]) == tuple(size):
        return cams
    flat = cams.reshape(-1, 1, *cams.shape[-2:])
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return out.view(*cams.shape[:2], *size)


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


def targets_on(table: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
    """The [N, T] classes on the scores' device: the predicted class where targets is None;
    otherwise checked against the number of classes."""
    if table is None:
        return scores.argmax(1, keepdim=True)
    classes = scores.shape[1]
    if table.numel() and (table.min() < 0 or table.max() >= classes):
        raise ValueError(f"targets must lie in [0, {classes}), got values in [{int(table.min())}, {int(table.max())}]")
    return table.to(scores.device)


def shape_result(values: torch.Tensor, class_axis: bool) -> torch.Tensor:
    """[N, T, ...] -> [N, ...] when the caller gave one class per image."""
    return values if class_axis else values[:, 0]
