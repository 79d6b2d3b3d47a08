"""Every torch.ops.camfast op, forward and backward, called directly (as exported graphs, autograd
and users' own code call them): each tensor argument's shape, dtype and device is checked before
any kernel runs, by an error that names the op and the argument.

The cases come from one table of valid arguments (VALID): for every tensor argument, one
dimension fewer, each size it shares with another argument off by one, a wrong dtype and (for
ops with several tensors) another device. Each runs on the compiled kernels and the Triton ops,
and on meta tensors, where the fake kernel must raise the same message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from camfast import _backend
from camfast_testing.checks import DEVICES


@dataclass(frozen=True)
class Dims:
    """The sizes VALID's arguments are made with: batch, channels, height, width."""

    n: int = 2
    c: int = 3
    h: int = 4
    w: int = 5


def _rand(*shape, dtype=torch.float32):
    return torch.rand(shape, dtype=dtype)


def _x(d: Dims):
    return _rand(d.n, d.c, d.h, d.w)


def _map(d: Dims):
    return _rand(d.n, 1, d.h, d.w)


# Valid arguments of every camfast op that takes tensors, by schema name (without the Triton suffix).
VALID: dict[str, Callable[[Dims], tuple]] = {
    "thresholded_avg_pool2d": lambda d: (_x(d), 0.5),
    "_thresholded_avg_pool2d_backward": lambda d: (_rand(d.n, d.c), _x(d), _rand(d.n, d.c),
                                                   torch.ones(d.n, d.c, dtype=torch.int32)),
    "score_cam_masks": lambda d: (_rand(d.n, 2, 3, 3), _x(d), False, True),
    "weighted_channel_sum": lambda d: (_x(d), _x(d), "grad-cam", 0.0),
    "adl": lambda d: (_x(d), torch.arange(d.n) % 2 == 0, 0.8),
    "_adl_backward": lambda d: (_x(d), _x(d), _map(d), torch.arange(d.n) % 2 == 0),
    "channel_spatial_attention": lambda d: (_x(d), _rand(d.n, d.c), True),
    "_channel_spatial_attention_backward": lambda d: (_x(d), _x(d), _rand(d.n, d.c), _map(d), True),
    "attention_branch_mix": lambda d: (_x(d), _map(d)),
    "_attention_branch_mix_backward": lambda d: (_x(d), _x(d), _map(d)),
    "spatial_softmax2d": lambda d: (_x(d), 1.0),
    "_spatial_softmax2d_backward": lambda d: (_x(d), _x(d), _rand(d.n, d.c), _rand(d.n, d.c) + 1, 1.0),
    "spatial_soft_argmax2d": lambda d: (_x(d), 1.0, True),
    "_spatial_soft_argmax2d_backward": lambda d: (_rand(d.n, d.c, 2), _x(d), _rand(d.n, d.c, 2), _rand(d.n, d.c),
                                                  _rand(d.n, d.c) + 1, 1.0, True),
    "wsol_box_sweep": lambda d: (torch.randint(0, 256, (d.n, d.h, d.w), dtype=torch.uint8),
                                 torch.tensor([[[0, 0, 2, 2], [1, 1, 3, 4]]] * d.n, dtype=torch.int64).view(d.n, 2, 4),
                                 torch.arange(d.n) % 2 + 1, True),
    "road_impute": lambda d: (_rand(d.n, d.c, d.h, d.w, dtype=torch.float64), torch.rand(d.n, d.h, d.w) < 0.3,
                              1e-8, 10),
}
# Sizes at the edge: each of N, C, H and W zero, and 1x1 maps.
DEGENERATE = [Dims(n=0), Dims(c=0), Dims(h=0), Dims(w=0), Dims(h=0, w=0), Dims(1, 1, 1, 1)]
# The argument the others are measured against (it fixes their device): "x" unless named here.
ANCHOR = {"score_cam_masks": "act", "weighted_channel_sum": "act", "channel_spatial_attention": "a",
          "_channel_spatial_attention_backward": "a", "attention_branch_mix": "g",
          "_attention_branch_mix_backward": "g", "wsol_box_sweep": "q", "road_impute": "images"}
# Dimensions an argument may size freely: the image Score-CAM upsamples to, the padded box lists.
FREE = {("score_cam_masks", "image"): (1, 2, 3), ("wsol_box_sweep", "gt_boxes"): (1,)}


def _schema(name: str):
    return getattr(torch.ops.camfast, name).default._schema


def _tensor_arguments(name: str) -> list[tuple[int, str]]:
    return [(i, a.name) for i, a in enumerate(_schema(name).arguments) if str(a.type) == "Tensor"]


def _stem(name: str) -> str:
    return name.removesuffix("_triton")


def _registered_ops() -> list[str]:
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("camfast::"))


def _op_name(op: str, backend: str) -> str:
    return op + ("_triton" if backend == "triton" else "")


def _backends() -> list[str]:
    return [b for b in ("cpp", "triton") if _backend.available(b, torch.device("cpu"))[0]]


# ------------------------------------------------------------------ the bad arguments, from VALID

def _wrong_dtype(t: torch.Tensor, anchor: bool) -> torch.dtype:
    if t.is_floating_point():
        return torch.int32 if anchor else (torch.float64 if t.dtype == torch.float32 else torch.float32)
    return torch.float32


@dataclass(frozen=True)
class Case:
    op: str                                   # schema name, without the Triton suffix
    arg: str                                  # the argument made wrong
    what: str
    wrong: Callable[[torch.Tensor], torch.Tensor]

    def args(self, device) -> tuple:
        """VALID's arguments on `device`, this one made wrong (for "device": moved off it)."""
        index = next(i for i, name in _tensor_arguments(self.op) if name == self.arg)
        args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in VALID[self.op](Dims())]
        args[index] = self.wrong(args[index])
        return tuple(args)


def _resized(t: torch.Tensor, dim: int) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] += 1
    return torch.zeros(shape, dtype=t.dtype, device=t.device)


def _other_device(t: torch.Tensor) -> torch.Tensor:
    return t.to("meta" if t.device.type == "cpu" else "cpu")


def _cases(op: str) -> list[Case]:
    valid = VALID[op](Dims())
    tensors = _tensor_arguments(op)
    anchor = ANCHOR.get(op, "x")
    cases = []
    for index, name in tensors:
        t = valid[index]
        cases.append(Case(op, name, "one dimension fewer", lambda t: t.select(-1, 0)))
        if name != anchor:  # the anchor's sizes are what the others must match
            free = FREE.get((op, name), ())
            cases += [Case(op, name, f"size {d} off by one", lambda t, d=d: _resized(t, d))
                      for d in range(t.dim()) if d not in free]
        dtype = _wrong_dtype(t, name == anchor)
        cases.append(Case(op, name, f"dtype {dtype}".replace("torch.", ""), lambda t, dtype=dtype: t.to(dtype)))
        if len(tensors) > 1:
            cases.append(Case(op, name, "another device", _other_device))
    return cases


def _ops() -> list[tuple[str, str, list]]:
    """(registered name, VALID's row, pytest marks) of every op of every backend usable here;
    Triton's are marked `triton` (they run no C++, so the sanitizer build skips them)."""
    names = [(_op_name(op, backend), op, [pytest.mark.triton] if backend == "triton" else [])
             for backend in _backends() for op in VALID]
    return [row for row in names if hasattr(torch.ops.camfast, row[0])]


def _op_params() -> list:
    return [pytest.param(name, op, id=name, marks=marks) for name, op, marks in _ops()]


def _params() -> list:
    return [pytest.param(name, case, id=f"{name}-{case.arg}-{case.what}", marks=marks)
            for name, op, marks in _ops() for case in _cases(op)]


# ------------------------------------------------------------------ the tests

def test_every_op_with_tensor_arguments_is_in_the_table():
    """A new op cannot slip through: every registered camfast op that takes a tensor has a row."""
    ops = [name for name in _registered_ops() if _tensor_arguments(name)]
    assert ops, "no camfast op is registered"
    missing = sorted({_stem(name) for name in ops} - VALID.keys())
    assert not missing, f"add these ops to VALID in {__file__}: {missing}"


@pytest.mark.parametrize("name,op", _op_params())
@pytest.mark.parametrize("device", [*DEVICES, "meta"])
def test_valid_arguments_pass(name, op, device):
    """The table's arguments are valid, so each error below is the one its case provokes."""
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in VALID[op](Dims())]
    getattr(torch.ops.camfast, name)(*args)


@pytest.mark.parametrize("name,op", _op_params())
@pytest.mark.parametrize("dims", DEGENERATE, ids=lambda d: f"{d.n}x{d.c}x{d.h}x{d.w}")
def test_edge_sizes_run_or_raise_clearly(name, op, dims):
    """Empty batches, channels and maps, and 1x1 maps, reach the kernels (the public functions
    reject some of them first): each call returns or names what it refuses, never crashes, and,
    in the sanitizer build, reads and writes nothing out of bounds."""
    try:
        getattr(torch.ops.camfast, name)(*VALID[op](dims))
    except RuntimeError as error:
        assert re.search(rf"camfast::{name}: ", str(error)), str(error)


def _error(name: str, args: tuple) -> str:
    with pytest.raises(RuntimeError) as error:
        getattr(torch.ops.camfast, name)(*args)
    return str(error.value)


@pytest.mark.parametrize("name,case", _params())
def test_bad_argument_is_named_before_any_kernel_runs(name, case):
    """The kernel (C++ or Triton) and the fake kernel on meta tensors raise the same message,
    which names the op and the argument (a tensor moved to another device may instead be named as
    the anchor whose device the others must share)."""
    named = re.compile(rf"camfast::{name}: .*\b{case.arg}\b")
    devices = DEVICES if case.what == "another device" else [*DEVICES, "meta"]
    messages = {device: _error(name, case.args(device)) for device in devices}
    for device, message in messages.items():
        assert named.search(message), f"{device}: {message}"
    if "meta" in messages:  # the C++ message carries a source location in front
        assert messages["cpu"].endswith(messages["meta"]), messages
