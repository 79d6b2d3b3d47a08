"""What every explainer shares: target layers, targets and scores, the model's state, the output.

Call convention: `explainer(x, targets=None) -> Tensor[N, H, W]` (one class per image) or
`Tensor[N, T, H, W]` (T classes per image), in [0, 1], on x's device.

- Target layers: one module or dotted name ("layer4.1.conv2"), or a list of them for the methods
  that fuse several layers (`Explainer.max_layers`). Each must run exactly once per forward.
- Targets: None (the predicted class), an int (every image), N ints or an integer tensor [N]
  (one class per image), or N lists of T ints or an integer tensor [N, T] (T classes per image:
  the result gets a class axis). Never truncated or broadcast silently.
- Scores: by default the model returns logits [N, classes] and the explained score is the target
  class's logit. `score=` takes a callable `(output, targets) -> Tensor[N]` or `[N, T]` for any
  other output (dicts, tuples, segmentation, detection); it receives `targets` exactly as the
  caller passed them, and the shape it returns decides the output's shape.

An explainer registers its hooks inside each call and removes them in a `finally`, so no hook
outlives a call, even one that raises. The model's train/eval flags and its parameters'
`requires_grad` flags are recorded before the call and restored after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_nchw, check_same_device
from .augment import augmentations, smooth
from .transformers import apply_transform, positions, resolve_transform


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


def resolve_layers(model: nn.Module, layers, name: str = "target_layer") -> list[nn.Module]:
    """One layer or a non-empty list/tuple of distinct layers (modules or dotted names) -> modules."""
    if not isinstance(layers, (list, tuple)):
        return [resolve_layer(model, layers, name)]
    if not layers:
        raise ValueError(f"{name} must name at least one layer, got an empty {type(layers).__name__}")
    modules = [resolve_layer(model, layer, f"{name}[{i}]") for i, layer in enumerate(layers)]
    if len({id(m) for m in modules}) != len(modules):
        raise ValueError(f"{name} names the same layer twice")
    return modules


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is layer), "?")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_targets(targets, n: int) -> tuple[torch.Tensor | None, bool]:
    """Class targets -> (LongTensor [N, T] on the caller's device, or None for the predicted
    class; whether the result has a class axis). Checks the layout only; the class range is
    checked against the logits by `class_indices`."""
    if targets is None:
        return None, False
    if _is_int(targets):
        return torch.full((n, 1), int(targets), dtype=torch.long), False
    if isinstance(targets, torch.Tensor):
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool \
                or targets.dim() not in (1, 2):
            raise TypeError("targets must be a 1-D [N] or 2-D [N, T] integer tensor, got "
                            f"{targets.dtype} of shape {tuple(targets.shape)}")
        if targets.shape[0] != n:
            raise ValueError(f"targets must hold classes for each of the {n} images, got {targets.shape[0]} rows")
        if targets.dim() == 2 and targets.shape[1] == 0:
            raise ValueError("targets [N, T] must hold at least one class per image, got T = 0")
        return (targets[:, None] if targets.dim() == 1 else targets).long(), targets.dim() == 2
    if isinstance(targets, Sequence) and not isinstance(targets, str):
        if len(targets) != n:
            raise ValueError(f"targets must hold classes for each of the {n} images, got {len(targets)}")
        if all(_is_int(t) for t in targets):
            return torch.tensor([[int(t)] for t in targets], dtype=torch.long).view(n, 1), False
        rows = [t for t in targets if isinstance(t, Sequence) and not isinstance(t, str) and all(map(_is_int, t))]
        if len(rows) == n:
            lengths = {len(row) for row in rows}
            if len(lengths) > 1 or 0 in lengths:
                raise ValueError(f"targets must give every image the same number (>= 1) of classes, got {sorted(lengths)}")
            return torch.tensor([list(map(int, row)) for row in rows], dtype=torch.long).view(n, -1), True
    raise TypeError("targets must be None, an int, N ints, N lists of T ints, or an integer tensor [N] or [N, T]")


def class_indices(targets: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """Parsed targets -> LongTensor [N, T] on the logits' device, checked to lie in [0, classes).

    The range check runs on the device without a host sync (torch._assert_async): immediately
    on CPU, where it is raised as a ValueError; asynchronously (a device-side assert) on CUDA.
    """
    if targets is None:
        return logits.argmax(1, keepdim=True)
    classes = logits.shape[1]
    targets = targets.to(logits.device)
    message = f"targets must lie in [0, {classes})"
    try:
        torch._assert_async(((targets >= 0) & (targets < classes)).all(), message)
    except RuntimeError:
        raise ValueError(message) from None
    return targets


def check_logits(logits, n: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"the model must return a Tensor[N, classes] of logits (or pass score=), got {got}")
    return logits


@dataclasses.dataclass
class Scores:
    """The explained scores of one forward: values [N, T]; classes [N, T] (None under score=);
    `class_axis`: whether the caller asked for a class axis in the result."""

    values: torch.Tensor
    classes: torch.Tensor | None
    class_axis: bool

    def shape_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps [N, T, ...] -> [N, ...] when the caller asked for one class per image."""
        return maps if self.class_axis else maps[:, 0]


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """(m - min) / (max - min) per map over its last two dims; a constant map gives zeros."""
    # Two reductions: torch.aminmax's one pass is 9x slower on CPU (0.70 against 0.08 ms for
    # [8, 224, 224], one thread, torch 2.13; benchmarks/NOTES.md).
    flat = maps.flatten(-2)
    lo, hi = flat.amin(-1), flat.amax(-1)
    span = hi - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (maps - lo[..., None, None]) / span[..., None, None]


def shift_scale(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """The peers' per-map normalisation: m - min, then divided by its max + eps (grad-cam's
    scale_cam_image uses eps 1e-7, torchcam's _normalize 1e-8)."""
    shifted = maps - maps.flatten(-2).amin(-1)[..., None, None]
    return shifted / (shifted.flatten(-2).amax(-1)[..., None, None] + eps)


def resize(maps: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear over the last two dims of [..., h, w] (a no-op at size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=align_corners)
    return out.view(*maps.shape[:-2], *size)


def to_image(raw: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Raw maps [..., h, w] to the explainer output: bilinear to `size`, min-max per map.

    Upsampling with align_corners=False is what cv2.resize (grad-cam) and torchcam's overlay do;
    normalising after it puts the output's extremes at exactly 0 and 1.
    """
    if raw.dtype in (torch.float16, torch.bfloat16):
        raw = raw.float()
    return minmax(resize(raw, size))


FUSIONS = ("mean", "max")


def fuse_layers(maps: Sequence[torch.Tensor], size: Sequence[int], fuse: str,
                scale: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Several layers' raw maps [..., h_l, w_l] -> one map, by the rule of either peer.

    fuse="mean" (grad-cam): each map ReLU, (m - min) / (max + 1e-7), bilinear to `size` (the
        input), then the mean over the layers.
    fuse="max" (torchcam fuse_cams): each map ReLU, (m - min) / (max + 1e-8), bilinear to the
        largest map's size, then the element-wise max.
    `scale`, when given, maps each normalised map before its resize (LayerCAM: tanh(2 m), which
    torchcam applies before its max).
    One layer is returned as it is: both peers skip the fusion then. The explainer's to_image
    finishes either (resize to the input, min-max).
    """
    if len(maps) == 1:
        return maps[0]
    scale = scale if scale is not None else (lambda m: m)
    if fuse == "mean":
        return torch.stack([resize(scale(shift_scale(m.relu(), 1e-7)), size) for m in maps]).mean(0)
    largest = [max(m.shape[d] for m in maps) for d in (-2, -1)]
    fused = None
    for m in maps:  # one resized map at a time bounds the memory
        m = resize(scale(shift_scale(m.relu(), 1e-8)), largest)
        fused = m if fused is None else torch.maximum(fused, m)
    return fused


class Capture:
    """One target layer's output during one forward; raises if the layer runs twice.

    `raw` keeps the output as the layer returns it (detached) and `activation` the maps
    [N, K, h, w]: the output itself, or `transform(output)` (see camfast.cam.transformers).
    grad=False keeps them detached. grad=True makes `activation` a tensor that gradients can be
    taken with respect to: the maps themselves when the output already requires grad (a layer
    above another captured one), otherwise a fresh leaf, so no graph is built below the first
    captured layer. With a transform, the rest of the forward gets the output rebuilt from the
    maps (the transform only rearranges: `positions` maps every map entry to its place in the
    output), so the gradient with respect to the maps is the transformed output gradient, as the
    peers compute it. With `clone=True` the rest of the forward gets a copy, so an in-place op after the
    layer (ReLU(inplace=True)) edits the copy, not the activation; clone=False saves that copy
    (one activation's memory per layer) and `check_unmodified` then catches such an op.
    """

    def __init__(self, name: str, grad: bool = False, clone: bool = True, transform=None, image_size=()):
        self.name, self.grad, self.clone = name, grad, clone
        self.transform, self.image_size = transform, tuple(image_size)
        self.activation: torch.Tensor | None = None
        self.raw: torch.Tensor | None = None
        self.version = 0

    def __call__(self, module, inputs, output):
        if self.transform is None and (not isinstance(output, torch.Tensor) or output.dim() != 4):
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise TypeError(f"target_layer {self.name!r} must output a Tensor[N, K, h, w], got {got}")
        if self.activation is not None:
            raise ValueError(f"target_layer {self.name!r} ran twice in one forward pass; a CAM needs one "
                             "activation per layer: choose a module that runs once")
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"target_layer {self.name!r} must output a Tensor, got {type(output).__name__}")
        self.raw, self.version = output.detach(), output._version
        if self.transform is not None:
            return self._transformed(output)
        leaf = self.grad and not output.requires_grad
        if leaf:
            self.activation = output.detach().requires_grad_(True)
        else:
            self.activation = output if self.grad else output.detach()
        # A leaf always hands out a copy: an in-place op on a leaf that requires grad is an error.
        return self.activation.clone() if leaf or self.clone else None

    def _transformed(self, output):
        if not self.grad:
            self.activation = apply_transform(self.transform, output.detach(), self.image_size)
            return output.clone() if self.clone else None
        base = output if output.requires_grad else output.detach()
        maps = apply_transform(self.transform, base, self.image_size)
        self.activation = maps if output.requires_grad else maps.detach().requires_grad_(True)
        index = positions(self.transform, output.shape, self.image_size).flatten().to(output.device)
        rebuilt = base.flatten(1).scatter(1, index.expand(output.shape[0], -1), self.activation.flatten(1))
        return rebuilt.view_as(output)

    def check_unmodified(self) -> None:
        if self.raw._version != self.version:
            raise ValueError(f"target_layer {self.name!r}: its output was modified in place later in the "
                             "forward pass (e.g. by ReLU(inplace=True)); choose the module after that op")


class Explainer:
    """Base class: `explainer(x, targets=None) -> Tensor[N, H, W]` (or `[N, T, H, W]`) in [0, 1].

    A subclass implements `_explain(x, targets) -> raw maps [N, h, w] or [N, T, h, w]` (use
    `Scores.shape_maps`), built from `forward` (output and activations in one pass) and `scores`.
    """

    # Gradient methods build a graph above the target layers; the others run under no_grad.
    needs_grad = False
    # How many target layers the method takes (None: any number, fused).
    max_layers: int | None = 1

    def __init__(self, model: nn.Module, target_layer, score: Callable | None = None, reshape_transform=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if score is not None and not callable(score):
            raise TypeError(f"score must be a callable (output, targets) -> Tensor[N] or [N, T], got {type(score).__name__}")
        self.model = model
        self.target_layers = resolve_layers(model, target_layer)
        if self.max_layers is not None and len(self.target_layers) > self.max_layers:
            raise ValueError(f"{type(self).__name__} takes {self.max_layers} target_layer, got {len(self.target_layers)}")
        self.score_fn = score
        self.reshape_transform = resolve_transform(reshape_transform)

    @property
    def target_layer(self) -> nn.Module:
        """The first (for single-layer methods, the only) target layer."""
        return self.target_layers[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> bool:
        # Hooks live only inside a call, so there is nothing left to remove here; the context
        # manager form is kept because the peer libraries' users write it.
        return False

    def __call__(self, x: torch.Tensor, targets=None, aug_smooth=False) -> torch.Tensor:
        """Maps [N, H, W] (or [N, T, H, W]) in [0, 1]. `aug_smooth`: test-time augmentation, True
        for grad-cam's six passes (horizontal flip x intensity 0.9, 1, 1.1) or a sequence of
        (flip, factor) pairs; the result is the mean of the passes' maps, each flipped back."""
        check_nchw(x, "x")
        param = next(self.model.parameters(), None)
        if param is not None:
            check_same_device({"x": x, "model": param})
        passes = augmentations(aug_smooth)
        if self.score_fn is None:
            targets = parse_targets(targets, x.shape[0])
        if x.shape[0] == 0:
            t = targets[0].shape[1:] if self.score_fn is None and targets[1] else ()
            return x.new_zeros((0, *t, *x.shape[2:]), dtype=torch.promote_types(x.dtype, torch.float32))
        if passes:
            return smooth(lambda image: self._maps(image, targets), x.detach(), passes)
        return self._maps(x.detach(), targets)

    def _maps(self, x: torch.Tensor, targets) -> torch.Tensor:
        with self._model_state():
            raw = self._explain(x, targets)
        return to_image(raw, x.shape[2:])

    def _explain(self, x: torch.Tensor, targets) -> torch.Tensor:
        """Raw maps [N, h, w] or [N, T, h, w] at the layers' resolution (or at the input's)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _model_state(self):
        """Eval mode, frozen parameters; every flag restored afterwards."""
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

    def forward(self, x: torch.Tensor, grad: bool = False, clone: bool = True) -> tuple[object, list[torch.Tensor]]:
        """(model output, one activation per target layer) from one forward; hooks removed after.

        grad/clone: see `Capture`. Raises if a target layer did not run, or ran twice.
        """
        output, captures = self.capture(x, grad, clone)
        return output, [c.activation for c in captures]

    def capture(self, x: torch.Tensor, grad: bool = False, clone: bool = True) -> tuple[object, list[Capture]]:
        """`forward`, with each layer's `Capture` (its raw output too)."""
        captures = [Capture(layer_name(self.model, layer), grad, clone, self.reshape_transform, x.shape[2:])
                    for layer in self.target_layers]
        handles = [layer.register_forward_hook(c) for layer, c in zip(self.target_layers, captures)]
        try:
            output = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        for c in captures:
            if c.activation is None:
                raise ValueError(f"target_layer {c.name!r} did not run during the model's forward pass")
            if not clone:
                c.check_unmodified()
        return output, captures

    def scores(self, output, targets, n: int) -> Scores:
        """The scores to explain for the N images: the target logits, or the `score=` callable's."""
        if self.score_fn is None:
            logits = check_logits(output, n)
            parsed, class_axis = targets
            classes = class_indices(parsed, logits)
            return Scores(logits.gather(1, classes), classes, class_axis)
        values = self.score_fn(output, targets)
        if not isinstance(values, torch.Tensor) or not values.dtype.is_floating_point:
            got = values.dtype if isinstance(values, torch.Tensor) else type(values).__name__
            raise TypeError(f"score must return a float Tensor[N] or [N, T], got {got}")
        if values.dim() not in (1, 2) or values.shape[0] != n or values.numel() == 0:
            raise ValueError(f"score must return a Tensor[N] or [N, T] with N = {n} (and T >= 1), "
                             f"got shape {tuple(values.shape)}")
        return Scores(values if values.dim() == 2 else values[:, None], None, values.dim() == 2)

    def __repr__(self) -> str:
        names = [layer_name(self.model, layer) for layer in self.target_layers]
        return f"{type(self).__name__}(target_layer={names[0] if len(names) == 1 else names!r})"


def check_fuse(fuse: str) -> str:
    return check_choice(fuse, "fuse", FUSIONS)


def check_differentiable(scores: Scores) -> None:
    if not scores.values.requires_grad:
        raise ValueError("score must depend on the target layers' output, got a result that needs no gradient")


def check_connected(grads: Sequence[torch.Tensor | None], names: Sequence[str]) -> None:
    """A layer the score does not depend on gets no gradient (None from allow_unused=True)."""
    for name, g in zip(names, grads):
        if g is None:
            raise ValueError(f"score does not depend on target_layer {name!r}")


def class_gradients(scores: Scores, activations: Sequence[torch.Tensor], names: Sequence[str]):
    """For each class t: the gradients of sum_n scores[n, t] with respect to every activation.

    One backward per class through the retained graph of the one forward; the graph is freed
    after the last. (torch.autograd.grad's is_grads_batched runs conv and batch-norm backward as
    the same per-class loop inside vmap on CPU, measured, and would hold all T gradients at once.)
    """
    check_differentiable(scores)
    values = scores.values
    last = values.shape[1] - 1
    for t in range(last + 1):
        grads = torch.autograd.grad(values[:, t].sum(), activations, retain_graph=t < last, allow_unused=True)
        check_connected(grads, names)
        yield grads
