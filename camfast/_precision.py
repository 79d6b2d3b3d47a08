"""The dtype an op with several floating inputs computes in, and its autocast rule.

Outside autocast, torch's type promotion: channel_spatial_attention(a_bf16, s_fp32) runs in
float32, as a_bf16 * s_fp32 would. Inside torch.autocast, the autocast dtype, as autocast casts
the inputs of a matmul: every floating input except float64 is cast to it (float64 is left alone,
as autocast leaves it, and then wins the promotion). The public functions apply this before any
backend runs, so every backend, the reference included, computes in the same dtype; the
registered autocast kernels give the compiled ops the same rule when they are called directly.
"""

from __future__ import annotations

import functools

import torch

# The dispatch key of autocast on each device type camfast runs on.
_AUTOCAST_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}
_LIBRARY = torch.library.Library("camfast", "IMPL")


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if device_type in _AUTOCAST_KEYS and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def common_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype floating tensors on one device compute in together (see the module docstring)."""
    autocast = _autocast_dtype(tensors[0].device.type)
    dtypes = [t.dtype if autocast is None or t.dtype == torch.float64 else autocast for t in tensors]
    return functools.reduce(torch.promote_types, dtypes)


def promoted(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in their common dtype (the same tensors when they already have it)."""
    first = tensors[0]
    if _autocast_dtype(first.device.type) is None and all(t.dtype == first.dtype for t in tensors):
        return tensors  # the common case, in a third of the time
    dtype = common_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)


def register_autocast(qualname: str) -> None:
    """An autocast kernel for the op `camfast::<name>`, on CPU and CUDA: its floating inputs are
    cast by `promoted`, then it runs below autocast.

    torch.library.register_autocast would cast to one dtype fixed at registration; this follows
    the dtype of the autocast region (torch.autocast("cpu", dtype=torch.float16) included).
    """
    name = qualname.split("::")[1]
    op = getattr(torch.ops.camfast, name).default

    for key in _AUTOCAST_KEYS.values():
        def kernel(*args, _key=key):
            floats = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
            cast = iter(promoted(*floats))
            args = [next(cast) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
            # Leaving the autocast key out is what autocast itself does for the op it wraps.
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, _key))):
                return op(*args)

        _LIBRARY.impl(name, kernel, key)
