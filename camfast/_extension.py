"""Loads the compiled extension camfast._C, and says what it offers.

Importing camfast never fails because the extension is missing or broken: it warns once and every
op falls back to another backend. `status()` keeps the reason for camfast.show_config().
"""

from __future__ import annotations

import functools
import warnings

import torch

_LOAD_ERROR: str | None = None

try:
    from . import _C  # noqa: F401  (loading registers the camfast:: ops)
except Exception as error:  # an absent build, or a torch the build cannot load into
    _LOAD_ERROR = f"{type(error).__name__}: {error}"
    warnings.warn(
        f"camfast: the compiled extension is unavailable ({_LOAD_ERROR}); using the Triton and "
        "reference backends. Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def load_error() -> str | None:
    """Why camfast._C did not load, or None when it did."""
    return _LOAD_ERROR


@functools.cache
def build_info() -> dict[str, str]:
    """What camfast._C was compiled against: {"torch": ..., "cuda_archs": ...}; {} without it."""
    if _LOAD_ERROR is not None:
        return {}
    pairs = (item.split("=", 1) for item in torch.ops.camfast._build_info().split(";"))
    return dict(pairs)


def cuda_archs() -> list[str]:
    archs = build_info().get("cuda_archs", "")
    return [a for a in archs.split(";") if a]


def has_cpp(device_type: str) -> bool:
    """Whether camfast._C holds kernels for this device type ("cpu" or "cuda")."""
    if _LOAD_ERROR is not None:
        return False
    if device_type == "cpu":
        return True
    return device_type == "cuda" and bool(cuda_archs())
