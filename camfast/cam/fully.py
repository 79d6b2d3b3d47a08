"""Fully-CAM (Song et al., IEEE Access 10:126440, 2022): LayerCAM of every layer, fused, from one
forward and one backward, each layer's map reduced as its gradient arrives."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_bool, check_choice, check_in_range, check_positive
from ._base import Explainer, check_differentiable, layer_name, minmax, resize, resolve_layers, shift_scale
from .gradient import layer_cam, tanh_scale

KINDS = {"conv": (nn.Conv2d,),
         "relu": (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)}
LAYER_NORMS = ("minmax", "max", "none")
SIZES = ("input", "largest")


class _Output:
    """One output of one layer during one forward: the tensor gradients are taken with respect
    to, its values as the layer returned them, and whether its map was reduced for the class."""

    def __init__(self, name: str, act: torch.Tensor):
        self.name, self.act, self.version = name, act, act._version
        self.values: torch.Tensor | None = None  # a copy, taken only before an in-place module edits act
        self.done = False

    def activation(self) -> torch.Tensor:
        return (self.values if self.values is not None else self.act).detach()


class _Root(torch.autograd.Function):
    """The identity, as a graph node: the rest of the forward gets a tensor that shares the leaf's
    memory and version counter but is not a leaf, so an in-place op after the layer works on it
    (and is seen by the version check) without copying the layer's output."""

    @staticmethod
    def forward(ctx, leaf):
        return leaf.detach()

    @staticmethod
    def backward(ctx, grad):
        return grad


class FullyCAM(Explainer):
    """Fully-CAM: the LayerCAM map of every layer of the network, normalised, resized and fused.

    Per layer n, with A its output and G = ds/dA (s the class logit, or `score=`):

        M_n = ReLU(sum_k ReLU(G_k) * A_k)                    LayerCAM's map (camfast.cam.LayerCAM)
        N_n = normalise(M_n)                                 layer_norm, eps
        R_n = resize(scale(N_n))                             scale, gamma, size, align_corners
        M   = mean_n R_n (fuse="mean")  or  max_n R_n (fuse="max"), then min-max to [0, 1]

    The paper's code and full fusion rule are not public: its abstract fixes LayerCAM per layer
    and a fusion, and every other choice is an argument here:

    - `layers`: "conv" (default): the output of every nn.Conv2d that runs; "relu": of every
      activation module (ReLU, GELU, SiLU, ...), closest to the LayerCAM paper's non-negative
      features; or a list of modules or dotted names. A module that runs several times
      contributes each output. Conv outputs can be negative, where ReLU(G) * A subtracts.
    - `layer_norm`: "minmax", (M - min) / (max - min + eps); "max", M / (max + eps); "none".
      eps: None gives grad-cam's 1e-7 for fuse="mean" and torchcam's 1e-8 for fuse="max"; with
      eps = 0 the min-max is exact and a constant map becomes 0.
    - `scale`: None, or "tanh": tanh(gamma N), the LayerCAM paper's Eq. 9 (gamma = 2).
    - `size`: "input", or "largest" (the largest layer's size per dimension); None: "input" for
      fuse="mean" and "largest" for fuse="max", as grad-cam and torchcam fuse.
    - `align_corners`: of the bilinear resize.

    Two settings are the peers' multi-layer LayerCAM with the same layers: fuse="mean" (the
    default) is grad-cam's `LayerCAM(model, target_layers)`; fuse="max", scale="tanh" is
    torchcam's `LayerCAM(model, layers)` followed by `fuse_cams`.

    Memory: one forward, then for each class ONE backward over all layers. A tensor hook on each
    layer's output reduces its map as soon as its gradient arrives and folds it into the running
    mean or max, so no layer's gradient outlives its hook; the backward frees each layer's saved
    activations as it passes. Beyond the forward's own graph the call holds the fused output
    and, at any time, the gradient in flight (at most one layer's, plus the first layer's, which
    the backward returns). grad-cam and torchcam keep every layer's gradient until the end.

    An output that an in-place module (ReLU(inplace=True), ...) overwrites later in the forward is
    copied just before it, so its map uses the layer's own output. An output edited by an
    in-place *function* (x.relu_(), +=) raises; `clone=True` copies every output to avoid that.

    Example:
        >>> import torch
        >>> from camfast.cam import FullyCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
        ...     torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...     torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> explainer = FullyCAM(model)                      # both convs, mean fusion
        >>> explainer(torch.rand(2, 3, 16, 16), targets=[[1, 2], [0, 4]]).shape
        torch.Size([2, 2, 16, 16])
        >>> FullyCAM(model, fuse="max", scale="tanh")(torch.rand(2, 3, 16, 16)).shape   # torchcam's rule
        torch.Size([2, 16, 16])
    """

    needs_grad = True
    max_layers = None

    def __init__(self, model: nn.Module, layers: str | Sequence = "conv", fuse: str = "mean",
                 layer_norm: str = "minmax", scale: str | None = None, gamma: float = 2.0, size: str | None = None,
                 eps: float | None = None, align_corners: bool = False, clone: bool = False, *, score=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(layers, str) and layers in KINDS:
            self.kind = layers
            modules = [m for m in model.modules() if isinstance(m, KINDS[layers])]
            if not modules:
                raise ValueError(f"layers={layers!r}: the model holds no {' or '.join(k.__name__ for k in KINDS[layers])}")
        else:
            self.kind = None
            modules = resolve_layers(model, layers, "layers")
        super().__init__(model, modules, score=score)
        self.fuse = check_choice(fuse, "fuse", ("mean", "max"))
        self.layer_norm = check_choice(layer_norm, "layer_norm", LAYER_NORMS)
        self.scale = check_choice(scale, "scale", (None, "none", "tanh"))
        self.gamma = check_positive(gamma, "gamma")
        self.size = check_choice(size, "size", (None, *SIZES))
        self.eps = check_in_range(eps, "eps", 0.0, math.inf) if eps is not None else (1e-7 if fuse == "mean" else 1e-8)
        self.align_corners = check_bool(align_corners, "align_corners")
        self.clone = check_bool(clone, "clone")

    # ------------------------------------------------------------------ the reduction

    def layer_map(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The raw map [N, h, w] of one layer (LayerCAM's)."""
        return layer_cam(act, grad)

    def _normalised(self, m: torch.Tensor) -> torch.Tensor:
        if self.layer_norm == "minmax":
            m = shift_scale(m, self.eps) if self.eps > 0 else minmax(m)
        elif self.layer_norm == "max":
            top = m.flatten(1).amax(1)[:, None, None] + self.eps
            m = m / torch.where(top > 0, top, torch.ones_like(top))
        return tanh_scale(self.gamma)(m) if self.scale == "tanh" else m

    def _fold(self, state: dict, m: torch.Tensor, size) -> None:
        """Fold one layer's normalised map into the class's running result.

        "mean": a running sum per map size, at that size; the bilinear resize is linear, so the
        sums are resized once per size at the end (5 resizes instead of 13 for a ResNet).
        "max": resized now (a max does not commute with the resize), then the running max.
        """
        if self.fuse == "mean":
            key = tuple(m.shape[-2:])
            state[key] = m if key not in state else state[key].add_(m)  # m is fresh: it may grow in place
            return
        m = resize(m, size, self.align_corners)
        state["max"] = m if "max" not in state else torch.maximum(state["max"], m, out=state["max"])

    def _finish(self, state: dict, size, layers: int) -> torch.Tensor:
        if self.fuse == "max":
            return state["max"]
        return sum(resize(m, size, self.align_corners) for m in state.values()) / layers

    # ------------------------------------------------------------------ one call

    def _explain(self, x, targets):
        model_output, outputs = self._forward(x)
        scores = self.scores(model_output, targets, x.shape[0])
        del model_output
        check_differentiable(scores)
        size = self._size(x, outputs)
        roots = [o.act for o in outputs if o.act.is_leaf]
        values, last = scores.values, scores.values.shape[1] - 1
        maps = []
        for t in range(last + 1):
            state = {}
            handles = [o.act.register_hook(self._reducer(o, state, size, t == last)) for o in outputs]
            try:
                torch.autograd.grad(values[:, t].sum(), roots, retain_graph=t < last, allow_unused=True)
            finally:
                for handle in handles:
                    handle.remove()
            missing = [o.name for o in outputs if not o.done]
            if missing:
                hint = "; pass layers= a list without them" if self.kind else ""
                raise ValueError(f"score does not depend on layers {missing}{hint}")
            for o in outputs:
                o.done = False
            maps.append(self._finish(state, size, len(outputs)))
        return scores.shape_maps(torch.stack(maps, 1))

    def _reducer(self, output: _Output, state: dict, size, last: bool):
        def reduce(grad):
            self._fold(state, self._normalised(self.layer_map(output.activation(), grad)), size)
            output.done = True
            if last:  # the backward has passed this layer: let its activation go
                output.act = output.values = None
        return reduce

    def _size(self, x, outputs: list[_Output]):
        size = self.size or ("input" if self.fuse == "mean" else "largest")
        if size == "input":
            return tuple(x.shape[2:])
        return tuple(max(o.act.shape[d] for o in outputs) for d in (-2, -1))

    def _forward(self, x) -> tuple[object, list[_Output]]:
        """(the model output, every layer output) from one forward with a hook on every layer."""
        names = {m: layer_name(self.model, m) for m in self.target_layers}
        calls = {m: 0 for m in self.target_layers}
        outputs: list[_Output] = []
        pending: dict[int, tuple] = {}  # id(tensor the forward goes on with) -> (it, its record)

        def capture(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise TypeError(f"layers: {names[module]!r} must output a Tensor[N, K, h, w], got {got}")
            calls[module] += 1
            name = names[module] if calls[module] == 1 else f"{names[module]} (call {calls[module]})"
            if output.requires_grad:
                record = _Output(name, output)
                forward = output
            else:  # the first layer on its path: a leaf, so no graph is built below it
                record = _Output(name, output.detach().requires_grad_(True))
                forward = _Root.apply(record.act)
            outputs.append(record)
            if self.clone:
                return forward.clone()
            pending[id(forward)] = (forward, record)
            return forward

        def before_in_place(module, inputs):
            forward, record = pending.get(id(inputs[0]), (None, None)) if inputs else (None, None)
            if forward is not None and forward is inputs[0] and record.values is None:
                record.values = record.act.detach().clone()

        handles = [m.register_forward_hook(capture) for m in self.target_layers]
        handles += [m.register_forward_pre_hook(before_in_place) for m in self.model.modules()
                    if getattr(m, "inplace", False) is True]
        try:
            model_output = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        if self.kind is None:
            for i, m in enumerate(self.target_layers):
                if not calls[m]:
                    raise ValueError(f"layers[{i}] {names[m]!r} did not run during the model's forward pass")
        elif not outputs:
            raise ValueError(f"layers={self.kind!r}: none of the model's layers of that kind ran")
        for o in outputs:
            if o.values is None and o.act._version != o.version:
                raise ValueError(f"layers: the output of {o.name!r} was modified in place later in the forward pass "
                                 "by a function (not a module); pass clone=True")
        return model_output, outputs

    def __repr__(self) -> str:
        layers = self.kind or [layer_name(self.model, m) for m in self.target_layers]
        return (f"FullyCAM(layers={layers!r}, fuse={self.fuse!r}, layer_norm={self.layer_norm!r}, scale={self.scale!r}, "
                f"size={self.size!r}, eps={self.eps})")
