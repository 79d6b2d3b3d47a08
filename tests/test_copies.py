"""Every camfast module can be copied, pickled and saved at any point of a training step, and
keeps no autograd graph alive once its outputs are gone."""

from __future__ import annotations

import copy
import gc
import io
import pickle
import weakref

import pytest
import torch

from camfast_testing.layer_models import EveryLayer, loss_of, modules, outputs

MODULES = sorted(modules())


def _input() -> torch.Tensor:
    return torch.randn(2, 8, 5, 5, requires_grad=True)


def _copies(module: torch.nn.Module) -> list[torch.nn.Module]:
    """deepcopy, pickle, torch.save of the module, and a fresh module loaded from its state_dict."""
    whole, state = io.BytesIO(), io.BytesIO()
    torch.save(module, whole)
    torch.save(module.state_dict(), state)
    whole.seek(0)
    state.seek(0)
    fresh = copy.deepcopy(module)  # same architecture; its parameters are overwritten below
    for p in fresh.parameters():
        p.data.zero_()
    fresh.load_state_dict(torch.load(state))
    return [copy.deepcopy(module), pickle.loads(pickle.dumps(module)), torch.load(whole, weights_only=False), fresh]


def _assert_same_function(module: torch.nn.Module, copies: list[torch.nn.Module]) -> None:
    x = torch.randn(3, 8, 5, 5)
    expected = outputs(module.eval()(x))
    module.train()
    for clone in copies:
        torch.testing.assert_close(outputs(clone.eval()(x)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODULES)
def test_copies_at_every_point_of_a_training_step(name):
    module = modules()[name].train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1) if list(module.parameters()) else None
    result = module(_input())
    _assert_same_function(module, _copies(module))  # after forward, the graph alive
    loss_of(result).backward()
    _assert_same_function(module, _copies(module))  # after backward
    if optimizer is not None:
        optimizer.step()
        _assert_same_function(module, _copies(module))  # after the update


class _Saved:
    """What autograd stores instead of a saved tensor: weakly referenceable. It keeps the tensor
    detached: a saved output would otherwise hold its own grad_fn, a cycle gc cannot see."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor.detach()


def _forward_tracking_saved_tensors(module, x):
    """module(x), and weak references to everything its autograd graph saved."""
    saved = []

    def pack(tensor):
        holder = _Saved(tensor)
        saved.append(weakref.ref(holder))
        return holder

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda holder: holder.tensor):
        result = module(x)
    assert saved, "the forward saved nothing: the test would prove nothing"
    return result, saved


def _assert_released(saved) -> None:
    gc.collect()
    alive = sum(ref() is not None for ref in saved)
    assert alive == 0, f"{alive} of {len(saved)} saved tensors are still held after the step"


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("backward", [False, True], ids=["forward_only", "forward_backward"])
def test_no_graph_alive_after_the_step(name, backward):
    """Dropping the outputs frees the whole graph: a forward whose loss is never used (a skipped
    step, an exception) must not hold it until the next forward."""
    module = modules()[name].train()
    result, saved = _forward_tracking_saved_tensors(module, _input())
    if backward:
        loss_of(result).backward()
    del result
    _assert_released(saved)


def test_every_layer_model_copies_mid_step_and_releases_its_graph():
    model = EveryLayer()
    labels = torch.tensor([0, 2])
    result, saved = _forward_tracking_saved_tensors(model, torch.randn(2, 3, 6, 6))
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model))]
    model.loss(result, labels).backward()
    copies.append(copy.deepcopy(model))
    del result
    _assert_released(saved)
    x = torch.randn(2, 3, 6, 6)
    for clone in copies:
        torch.testing.assert_close(clone.eval()(x), model.eval()(x), rtol=0, atol=0)
