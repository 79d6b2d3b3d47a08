"""Argument checks shared by every public op.

They run before any backend is chosen, so bad input gets the same ValueError/TypeError, naming
the argument and what was expected, on every backend and device.
"""

from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(x, name: str, ndim: int | tuple[int, ...], layout: str) -> None:
    """x is a floating-point tensor of rank `ndim` (or one of several), described to the user as `layout`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}"
        )
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if x.dim() not in ranks:
        ranks_text = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{name} must be {ranks_text} {layout}, got shape {tuple(x.shape)}")


def check_nchw(x, name: str = "x") -> None:
    """x is a float [N, C, H, W] tensor with a non-empty image (N may be 0)."""
    check_float_tensor(x, name, 4, "[N, C, H, W]")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must have H > 0 and W > 0, got shape {tuple(x.shape)}")


def check_same_device(tensors: dict[str, torch.Tensor]) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"{' and '.join(devices)} must be on the same device, got {listed}")


def check_shape(x: torch.Tensor, name: str, expected: tuple[int, ...], meaning: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {meaning} = {tuple(expected)}, got {tuple(x.shape)}")


def check_number(value, name: str) -> float:
    """A real Python (or NumPy) number, not a bool or tensor; returned as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_in_range(value, name: str, low: float, high: float) -> float:
    """A number in the closed interval [low, high]."""
    value = check_number(value, name)
    if not low <= value <= high:  # also rejects NaN
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value}")
    return value


def check_positive(value, name: str) -> float:
    value = check_number(value, name)
    # Comparisons rather than math.isfinite, which torch.compile(dynamic=True) cannot trace.
    if not 0 < value < math.inf:  # also rejects NaN
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
