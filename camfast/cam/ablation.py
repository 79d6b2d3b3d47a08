"""Ablation-CAM (Desai and Ramaswamy, WACV 2020), batched on the device."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .._validation import check_choice
from ._base import Explainer, check_logits, layer_name
from ._split import Split, linear_head, split_model, trace
from .transformers import apply_transform, channel_axis
from .eigen import first_component
from .score import _positive_int

ABLATION_VALUES = ("zero", "grad-cam-legacy")


def _ablation_list(act: torch.Tensor, ratio: float) -> torch.Tensor:
    """grad-cam's `ratio_channels_to_ablate`: the channels each image ablates, in grad-cam's order, [N, L].

    ratio 1: all, in order. Otherwise, per image: a mask of the pixels where |EigenCAM projection|,
    min-max scaled, exceeds 0.01; each channel's score is the share of its min-max scaled |A_k|
    inside the mask (NaN for a constant channel, sorted above every number as NumPy does); the
    list is the int(K * ratio) highest scores, then the int(K * ratio) lowest. Equal scores are
    common (1.0 for every channel that lies wholly inside the mask), so the order is NumPy's
    argsort, as grad-cam's: the scores are read to the host once. For a ratio above 0.5 the two
    lists overlap: grad-cam then ablates a channel twice and mis-assigns later channels; here each
    channel is ablated once.
    """
    n, k = act.shape[:2]
    if ratio >= 1:
        return torch.arange(k, device=act.device).expand(n, k)
    proj = first_component(act).abs().flatten(1)
    proj = proj - proj.amin(1, keepdim=True)
    inside = proj / proj.amax(1, keepdim=True) > 0.01  # no eps, as grad-cam: 0/0 is outside
    a = act.abs().flatten(2)
    a = a - a.amin(2, keepdim=True)
    a = a / a.amax(2, keepdim=True)
    score = (a * inside[:, None]).sum(2) / a.sum(2)
    order = torch.from_numpy(np.argsort(score.cpu().numpy(), axis=1)).to(act.device)
    count = int(k * ratio)
    return torch.cat([order.flip(1)[:, :count], order[:, :count]], dim=1)


def _list_positions(order: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, K] bool: the channel is in the list, [N, K] long: its first place in the list)."""
    places = torch.arange(order.shape[1], device=order.device).expand_as(order)
    position = torch.full((order.shape[0], k), order.shape[1], dtype=torch.long, device=order.device)
    position = position.scatter_reduce(1, order, places, reduce="amin")
    return position < order.shape[1], position


def _legacy_values(act: torch.Tensor, position: torch.Tensor, batch_size: int) -> torch.Tensor:
    """grad-cam's ablation value [N, K]: 0 for an image whose minimum is exactly 0; otherwise the
    channel at position p of the image's list gets m - (j + 1) 1e7 with j = p % batch_size and m the
    image's minimum, computed in float32 as grad-cam does (min - 1e7, once per row of a chunk)."""
    low = act.flatten(1).amin(1).float()
    steps = [low - 1e7]
    for _ in range(1, batch_size):
        steps.append(steps[-1] - 1e7)
    escalating = torch.stack(steps, 1).gather(1, position % batch_size)
    return torch.where((low == 0)[:, None], torch.zeros_like(escalating), escalating).to(act.dtype)


def _suffix_runner(split: Split, extra: list[torch.Tensor]):
    def run(batch, owner):
        return split.suffix(batch, *(v.index_select(0, owner) for v in extra))

    return run


class AblationCAM(Explainer):
    """Ablation-CAM: w_k = (y_c - y_c^k) / y_c, M = ReLU(sum_k w_k A_k), where y_c^k is the class
    score with channel k of the target layer's output set to the ablation value (paper, grad-cam
    1.5.7; y_c is the raw logit and a negative y_c flips the map, as there).

    Ablation value: `ablation_value="zero"` (default) sets the channel to 0, which removes it only
    where the layer's output is never negative (after a ReLU): a layer with a negative value
    raises. "grad-cam-legacy" reproduces grad-cam's value: 0 where the image's minimum is 0, else
    min - (j + 1) 1e7 for the j-th channel of each chunk of `batch_size` (it grows with j).

    Cost. Ablated copies of the activation are scored `batch_size` at a time, chunks mixing
    images, the scores staying on the device. What runs for them:
      - the exact GAP shortcut, no forward at all: when the layer's output goes straight through
        global average pooling and a linear classifier to the model's output (traced with
        torch.fx, or in `head`), y_c - y_c^k = W[c, k] (mean_ij A_k - v) (fast=True);
      - `head` (a module or function with head(layer output) == model output), or the part of
        the model after the layer when torch.fx can trace it (split=True, the default);
      - else the whole model, the layer's output replaced by the ablated copies (grad-cam's cost).
    An all-zero channel ablated to 0 changes nothing (w = 0) and is not forwarded (fast=True).
    Host reads: one per call (how many channels to forward), plus one for the ablation-value check
    and, with `head`, one that checks head(A) against the model's output.
    `ratio_channels_to_ablate` < 1 ablates only some channels, chosen as grad-cam chooses them
    (see `_ablation_list`); the others get w = 0. `mode` tells the path the last call took.

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 4))
    >>> explainer = AblationCAM(model, "1")
    >>> explainer(torch.rand(2, 3, 16, 16)).shape, explainer.mode
    (torch.Size([2, 16, 16]), 'gap-linear')
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, head=None, batch_size: int = 32,
                 ratio_channels_to_ablate: float = 1.0, ablation_value: str = "zero", split: bool = True,
                 fast: bool = True, reshape_transform=None):
        super().__init__(model, target_layer, reshape_transform=reshape_transform)
        if head is not None and not callable(head):
            raise TypeError(f"head must be None, an nn.Module or a callable, got {type(head).__name__}")
        ratio = ratio_channels_to_ablate
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"ratio_channels_to_ablate must be a number in (0, 1], got {ratio!r}")
        self.head, self.ratio = head, float(ratio)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.ablation_value = check_choice(ablation_value, "ablation_value", ABLATION_VALUES)
        self.split, self.fast = bool(split), bool(fast)
        self.mode = None
        self._traced = (None, None)  # (the model's modules when traced, the split)

    # ---------------------------------------------------------------- the clean pass and the split

    def _split_model(self) -> Split | None:
        """The torch.fx split at the target layer, traced once and again only when the model's
        modules change (a module replaced or added)."""
        modules = tuple(map(id, self.model.modules()))
        if self._traced[0] != modules:
            self._traced = (modules, split_model(self.model, self.target_layer)[0])
        return self._traced[1]

    def _prepare(self, x) -> _CleanPass:
        split = self._split_model() if self.split and self.head is None else None
        if split is not None:
            raw, *extra = split.prefix(x)
            if all(isinstance(v, torch.Tensor) and v.shape[:1] == x.shape[:1] for v in extra):
                # clones: the suffix may write into its inputs in place (a ReLU(inplace=True) after the layer)
                logits = split.suffix(raw.clone(), *(v.clone() for v in extra))
                maps = _maps(raw, self.reshape_transform, x.shape[2:], layer_name(self.model, self.target_layer))
                return _CleanPass(logits, raw, maps, _suffix_runner(split, extra), split.linear_weight, "fx")
        logits, (capture,) = self.capture(x)
        if self.head is not None and self.split:
            self._check_head(logits, capture.raw)
            return _CleanPass(logits, capture.raw, capture.activation, lambda batch, owner: self.head(batch),
                              self._head_linear_weight(), "head")
        return _CleanPass(logits, capture.raw, capture.activation, self._whole_model_runner(x), None, "model")

    def _check_head(self, logits, act):
        try:
            out = self.head(act.clone())
        except RuntimeError as exc:  # a shape mismatch inside the head: it does not start at this layer
            raise ValueError(f"head must map the target layer's output {tuple(act.shape)} to the model's output; "
                             f"it raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, torch.Tensor) or not isinstance(logits, torch.Tensor) or out.shape != logits.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"head must map the target layer's output to the model's output, got {got}")
        tol = 1e-4 * (1 + logits.abs().amax())
        if ((out - logits).abs().amax() > tol).view(1).nonzero().numel():
            raise ValueError("head(target layer output) differs from the model's output: head must be "
                             "the part of the model after the target layer")

    def _head_linear_weight(self):
        if not isinstance(self.head, nn.Module):
            return None
        try:
            traced = trace(self.head)
        except Exception:  # noqa: BLE001 - an untraceable head simply has no shortcut
            return None
        return linear_head(traced, next(n for n in traced.graph.nodes if n.op == "placeholder"))

    def _whole_model_runner(self, x):
        """Run the whole model on the chunk's images with the layer's output replaced by `batch`."""
        def run(batch, owner):
            handle = self.target_layer.register_forward_hook(lambda module, inputs, output: batch)
            try:
                return self.model(x.index_select(0, owner))
            finally:
                handle.remove()

        return run

    # ---------------------------------------------------------------- scores

    def _explain(self, x, targets):
        clean = self._prepare(x)
        scores = self.scores(clean.logits, targets, x.shape[0])
        original = scores.values.to(torch.promote_types(scores.values.dtype, torch.float32))  # [N, T]
        maps = clean.maps
        selected, position = _list_positions(_ablation_list(maps, self.ratio), maps.shape[1])
        value = self._values(clean.raw, position)
        if self.fast and clean.linear_weight is not None and self.reshape_transform is None:
            self.mode = "gap-linear"
            drop = clean.linear_weight.to(original.dtype)[scores.classes] * \
                (maps.to(original.dtype).mean((2, 3)) - value)[:, None]  # [N, T, K]
            ablated = original[:, :, None] - drop * selected[:, None]
        else:
            self.mode = clean.mode
            ablated = self._ablated_scores(clean, x.shape[2:], value, selected, scores.classes, original)
        weights = (original[:, :, None] - ablated) / original[:, :, None]  # [N, T, K]
        return scores.shape_maps(torch.einsum("ntk,nkhw->nthw", weights.to(maps.dtype), maps).relu())

    def _values(self, raw, position):
        if self.ablation_value == "zero":
            if (raw.amin() < 0).view(1).nonzero().numel():
                raise ValueError("target_layer has negative values, so ablating a channel to 0 does not remove "
                                 "it: pick a layer after a ReLU, or pass ablation_value='grad-cam-legacy'")
            return torch.zeros(position.shape, dtype=raw.dtype, device=raw.device)
        return _legacy_values(raw, position, self.batch_size)

    def _ablated_scores(self, clean, image_size, value, selected, classes, original):
        """Scores [N, T, K] with each selected channel ablated; the others keep the original score."""
        raw, maps = clean.raw, clean.maps
        n, k = maps.shape[:2]
        axis, index = (1, torch.arange(k)) if self.reshape_transform is None else \
            channel_axis(self.reshape_transform, raw.shape, image_size)
        index = index.to(raw.device)
        todo = selected
        if self.fast and self.ablation_value == "zero":  # ablating an all-zero channel to 0 is a no-op
            todo = todo & (maps.flatten(2).amax(2) > 0)
        todo = todo.flatten().nonzero()[:, 0]  # the one host sync that sizes the loop
        scores = original[:, :, None].expand(-1, -1, k).clone()
        flat_value = value.flatten()
        for chunk in todo.split(self.batch_size):
            owner, channel = torch.div(chunk, k, rounding_mode="floor"), chunk % k
            batch = raw.index_select(0, owner)
            view = batch.movedim(axis, 1)  # a view: writing into it writes into batch
            rows = torch.arange(len(chunk), device=raw.device)
            view[rows, index[channel]] = flat_value[chunk].view(-1, *[1] * (view.dim() - 2))
            out = check_logits(clean.run(batch, owner), len(chunk))
            scores[owner, :, channel] = out.to(scores.dtype).gather(1, classes[owner])
        return scores

    def __repr__(self) -> str:
        return (f"{super().__repr__()[:-1]}, batch_size={self.batch_size}, ratio_channels_to_ablate={self.ratio}, "
                f"ablation_value={self.ablation_value!r}, split={self.split}, head={self.head is not None})")


@dataclasses.dataclass
class _CleanPass:
    """The unablated forward: the output, the layer's output (raw) and its maps, and how to score
    ablated copies: run(ablated raw batch, the images they belong to) -> model output."""

    logits: torch.Tensor
    raw: torch.Tensor
    maps: torch.Tensor
    run: Callable
    linear_weight: torch.Tensor | None
    mode: str


def _maps(raw: torch.Tensor, transform, image_size, name: str) -> torch.Tensor:
    if transform is not None:
        return apply_transform(transform, raw, image_size)
    if raw.dim() != 4:
        raise TypeError(f"target_layer {name!r} must output a Tensor[N, K, h, w], got {tuple(raw.shape)}")
    return raw
