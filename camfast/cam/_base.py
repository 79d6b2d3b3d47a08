"""What every explainer shares: the target layer, targets, the model's state, the output map.

An explainer registers its hooks inside each call and removes them in a `finally`, so no hook
outlives a call, even one that raises. The model's train/eval flags and its parameters'
`requires_grad` flags are recorded per module/parameter before the call and restored after it.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_nchw, check_same_device


def resolve_layer(model: nn.Module, layer: nn.Module | str, name: str = "target_layer") -> nn.Module:
    """A submodule of `model`, given as the module itself or its dotted name ("layer4.1.conv2")."""
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            close = [n for n in modules if n and (layer in n or n in layer)][:5]
            hint = f"; close names: {close}" if close else ""
            raise ValueError(f"{name} {layer!r} is not a submodule of the model{hint}")
        return modules[layer]
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"{name} must be a submodule of the model, got a module outside it")
        return layer
    raise TypeError(f"{name} must be an nn.Module or a dotted module name, got {type(layer).__name__}")


def resolve_targets(targets, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image as a LongTensor[N] on the logits' device (no host sync).

    None takes the predicted class; an int is used for every image; a sequence or 1-D integer
    tensor must hold exactly one class per image (never truncated or broadcast silently).
    """
    n, classes = logits.shape
    if targets is None:
        return logits.argmax(1)
    if isinstance(targets, numbers.Integral) and not isinstance(targets, bool):
        targets = [int(targets)] * n
    if isinstance(targets, torch.Tensor):
        if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.dim() != 1:
            raise TypeError(f"targets must be a 1-D integer tensor, got {targets.dtype} of shape {tuple(targets.shape)}")
        if targets.shape[0] != n:
            raise ValueError(f"targets must hold one class per image ({n}), got {targets.shape[0]}")
        return targets.to(device=logits.device, dtype=torch.long)
    if not isinstance(targets, Sequence) or not all(
        isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in targets
    ):
        raise TypeError("targets must be None, an int, a sequence of ints or a 1-D integer tensor")
    if len(targets) != n:
        raise ValueError(f"targets must hold one class per image ({n}), got {len(targets)}")
    if any(not 0 <= t < classes for t in targets):
        raise ValueError(f"targets must lie in [0, {classes}), got {list(targets)}")
    return torch.tensor(list(targets), dtype=torch.long, device=logits.device)


def check_logits(logits, n: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"the model must return a Tensor[N, classes] of logits, got {got}")
    return logits


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """(m - min) / (max - min) per map over its last two dims; a constant map gives zeros."""
    lo, hi = torch.aminmax(maps.flatten(-2), dim=-1)  # one pass for both extremes
    span = hi - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (maps - lo[..., None, None]) / span[..., None, None]


def to_image(raw: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Raw maps [N, h, w] to the explainer output: bilinear to `size`, min-max per image.

    Upsampling with align_corners=False is what cv2.resize (grad-cam) and torchcam's overlay do;
    normalising after it puts the output's extremes at exactly 0 and 1.
    """
    if raw.dtype in (torch.float16, torch.bfloat16):
        raw = raw.float()
    if tuple(raw.shape[-2:]) != tuple(size):
        raw = F.interpolate(raw[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return minmax(raw)


class Capture:
    """The target layer's output during one forward (the last call, if the layer runs twice).

    With `leaf=True` the output is replaced by a copy of a fresh leaf that requires grad: the
    gradient of a score with respect to that leaf is dy/dA, obtained without building any graph
    below the layer, and an in-place op after the layer (ReLU(inplace=True)) edits the copy,
    not the activation.
    """

    def __init__(self, leaf: bool):
        self.leaf = leaf
        self.activation: torch.Tensor | None = None

    def __call__(self, module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise TypeError(f"target_layer must output a Tensor[N, K, h, w], got {got}")
        if not self.leaf:
            self.activation = output.detach()
            return None
        self.activation = output.detach().requires_grad_(True)
        return self.activation.clone()


class Explainer:
    """Base class: `explainer(x, targets=None) -> Tensor[N, H, W]` in [0, 1] on x's device."""

    # Gradient methods build a graph above the target layer; the others run under no_grad.
    needs_grad = False

    def __init__(self, model: nn.Module, target_layer: nn.Module | str):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.target_layer = resolve_layer(model, target_layer)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> bool:
        # Hooks live only inside a call, so there is nothing left to remove here; the context
        # manager form is kept because the peer libraries' users write it.
        return False

    def __call__(self, x: torch.Tensor, targets=None) -> torch.Tensor:
        check_nchw(x, "x")
        param = next(self.model.parameters(), None)
        if param is not None:
            check_same_device({"x": x, "model": param})
        if x.shape[0] == 0:
            return x.new_zeros((0, *x.shape[2:]), dtype=torch.promote_types(x.dtype, torch.float32))
        with self._model_state():
            raw = self._explain(x.detach(), targets)
        return to_image(raw, x.shape[2:])

    def _explain(self, x: torch.Tensor, targets) -> torch.Tensor:
        """Raw maps [N, h, w] at the target layer's resolution (or at the input's)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _model_state(self):
        """Eval mode, frozen parameters for gradient methods; every flag restored afterwards."""
        modes = [(m, m.training) for m in self.model.modules()]
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            self.model.eval()
            for p, _ in flags:
                p.requires_grad_(False)
            with torch.enable_grad() if self.needs_grad else torch.no_grad():
                yield
        finally:
            for m, training in modes:
                m.training = training
            for p, requires_grad in flags:
                p.requires_grad_(requires_grad)

    def forward_with_activation(self, x: torch.Tensor, leaf: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, activation of the target layer) from one forward; the hook is removed after."""
        capture = Capture(leaf)
        handle = self.target_layer.register_forward_hook(capture)
        try:
            logits = check_logits(self.model(x), x.shape[0])
        finally:
            handle.remove()
        if capture.activation is None:
            raise ValueError("target_layer did not run during the model's forward pass")
        return logits, capture.activation

    def __repr__(self) -> str:
        layer = next((n for n, m in self.model.named_modules() if m is self.target_layer), "?")
        return f"{type(self).__name__}(target_layer={layer!r})"
