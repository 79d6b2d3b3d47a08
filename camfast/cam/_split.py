"""Running only the part of a model after a layer, found with torch.fx.

`split_model(model, layer)` traces the model with the layer kept whole (a leaf) and cuts the
graph at that layer's call: the prefix computes the layer's output, the suffix computes the
model's output from it. Values computed before the layer and read again after it (a skip
connection around the layer) become extra outputs of the prefix and extra inputs of the
suffix. `linear_head` recognises a layer whose output goes straight through global average
pooling and a linear classifier to the model's output.
"""

from __future__ import annotations

import dataclasses
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn


@dataclasses.dataclass
class Split:
    """model(x) == suffix(*prefix(x)); prefix(x) = (layer output, *values the suffix also reads)."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    # [classes, K] weight when the layer feeds GAP -> (reshape) -> Linear -> the model's output.
    linear_weight: torch.Tensor | None


class _LayerTracer(fx.Tracer):
    """An fx tracer that keeps `layer` as one call, however it is built inside."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return module is self.layer or super().is_leaf_module(module, qualified_name)


def trace(module: nn.Module, keep: nn.Module | None = None) -> fx.GraphModule:
    """Symbolic trace of `module`, with `keep` as a leaf; raises what torch.fx raises."""
    tracer = _LayerTracer(keep)
    graph = tracer.trace(module)
    return fx.GraphModule(module, graph)


def split_model(model: nn.Module, layer: nn.Module) -> tuple[Split | None, str]:
    """The split at `layer`, or (None, why not). Traced with the model's current flags: call it
    with the model in the mode it will run in (a traced F.dropout keeps its `training`)."""
    try:
        traced = trace(model, layer)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "no split": run the whole model
        return None, f"torch.fx cannot trace the model ({type(exc).__name__}: {exc})"
    graph = traced.graph
    calls = [n for n in graph.nodes if n.op == "call_module" and traced.get_submodule(n.target) is layer]
    if len(calls) != 1:
        return None, f"the target layer is called {len(calls)} times in the traced graph"
    cut = calls[0]
    after = _descendants(cut)
    output = next(n for n in graph.nodes if n.op == "output")
    if output not in after:
        return None, "the model's output does not depend on the target layer"
    crossing = _unique(a for n in graph.nodes if n in after for a in n.all_input_nodes
                       if a not in after and a is not cut and a.op != "get_attr")
    prefix = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node.op != "output" and node not in after:
            env[node] = prefix.node_copy(node, env.__getitem__)
    prefix.output((env[cut], *(env[n] for n in crossing)))
    suffix = fx.Graph()
    env = {cut: suffix.placeholder("activation")}
    env.update({n: suffix.placeholder(f"value_{i}") for i, n in enumerate(crossing)})
    for node in graph.nodes:
        if node in after:
            for arg in node.all_input_nodes:
                if arg not in env:  # a parameter or buffer read after the layer
                    env[arg] = suffix.node_copy(arg)
            env[node] = suffix.node_copy(node, env.__getitem__)
    weight = linear_head(traced, cut)
    return Split(fx.GraphModule(traced, prefix), fx.GraphModule(traced, suffix), weight), "torch.fx split"


def _descendants(node: fx.Node) -> set[fx.Node]:
    seen, todo = set(), list(node.users)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.users)
    return seen


def _unique(nodes):
    return list(dict.fromkeys(nodes))


# ------------------------------------------------------------------- GAP -> Linear head detection

_SPATIAL_DIMS = ((2, 3), (-2, -1), [2, 3], [-2, -1])


def _arg(node: fx.Node, index: int, name: str, default=None):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _is_global_avg_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1), [1, 1])
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        return _arg(node, 1, "output_size") in (1, (1, 1), [1, 1])
    if (node.op, node.target) in (("call_function", torch.mean), ("call_method", "mean")):
        return _arg(node, 1, "dim") in _SPATIAL_DIMS and _arg(node, 3, "dtype") is None
    return False


def _is_reshape(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops that only reshape a [N, K, 1, 1] (or [N, K]) tensor into [N, K], or leave it alone in eval mode."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (nn.Flatten, nn.Dropout, nn.Identity))
    if node.op == "call_function":
        return node.target in (torch.flatten, torch.squeeze, torch.reshape, F.dropout)
    return node.op == "call_method" and node.target in ("flatten", "view", "reshape", "squeeze")


def _linear_weight(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor | None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return module.weight if isinstance(module, nn.Linear) else None
    if node.op == "call_function" and node.target is F.linear:
        weight = _arg(node, 1, "weight")
        if isinstance(weight, fx.Node) and weight.op == "get_attr":
            return operator.attrgetter(weight.target)(gm)
    return None


def linear_head(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor | None:
    """The [classes, K] weight W when `node` feeds, each step its only use, global average
    pooling, reshapes, and a linear layer whose result is the graph's output; else None.
    Then y = W mean_ij(A) + b, and setting channel k of A to v changes y by -W[:, k] (mean_ij A_k - v)."""
    def only_user(n):
        return next(iter(n.users)) if len(n.users) == 1 else None

    step = only_user(node)
    if step is None or not _is_global_avg_pool(gm, step):
        return None
    step = only_user(step)
    while step is not None and _is_reshape(gm, step):
        step = only_user(step)
    if step is None:
        return None
    weight = _linear_weight(gm, step)
    if weight is None or only_user(step) is None or only_user(step).op != "output":
        return None
    return weight.detach() if only_user(step).args[0] is step else None
