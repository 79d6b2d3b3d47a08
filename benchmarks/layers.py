"""Benchmark cases for layer ops: forward, backward and full (forward + backward) per backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from camfast import _backend

from .harness import Case

MODES = ("forward", "backward", "full")


def backends(device: torch.device) -> list[str]:
    """The reference, then every compiled backend that runs natively on the device.

    Triton on CPU only runs under its interpreter, which is a test tool, not a provider.
    """
    compiled = ["cpp"] + (["triton"] if device.type == "cuda" else [])
    return ["reference"] + [b for b in compiled if _backend.available(b, device)[0]]


def _grad_inputs(inputs: Sequence) -> list[torch.Tensor]:
    return [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]


def _forward(call, backend, inputs):
    def run():
        with torch.no_grad():
            return call(backend, *inputs)

    return run


def _backward(call, backend, inputs):
    out = call(backend, *inputs)
    grad = torch.randn_like(out)
    wrt = _grad_inputs(inputs)
    return lambda: torch.autograd.grad(out, wrt, grad, retain_graph=True)


def _full(call, backend, inputs):
    wrt = _grad_inputs(inputs)
    grad = torch.randn_like(call(backend, *inputs))
    return lambda: torch.autograd.grad(call(backend, *inputs), wrt, grad)


_BUILDERS = {"forward": _forward, "backward": _backward, "full": _full}


def shape_label(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def layer_cases(
    op: str,
    call: Callable,
    make_inputs: Callable[[Sequence[int], torch.dtype, torch.device], tuple],
    shapes: Sequence[Sequence[int]],
    dtypes: Sequence[torch.dtype],
    device: torch.device,
    floor_bytes: Callable[[Sequence[int], torch.dtype, str], int] | None = None,
    modes: Sequence[str] = MODES,
    variant: str = "",
) -> list[Case]:
    """Cases for every shape x dtype x mode; each provider is `call(backend, *inputs)`.

    make_inputs returns the op's arguments with the differentiable ones requiring grad. One set of
    inputs is shared by all providers of a case, so they compute the same thing.
    """
    cases = []
    for shape in shapes:
        for dtype in dtypes:
            inputs = make_inputs(shape, dtype, device)
            for mode in modes:
                providers = {b: _BUILDERS[mode](call, b, inputs) for b in backends(device)}
                cases.append(Case(
                    op=op + (f"[{variant}]" if variant else ""),
                    mode=mode,
                    shape=shape_label(shape),
                    dtype=str(dtype).removeprefix("torch."),
                    providers=providers,
                    floor_bytes=floor_bytes(shape, dtype, mode) if floor_bytes else None,
                ))
    return cases
