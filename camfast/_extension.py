"""Loads the compiled extension camfast._C, and says what it offers.

Importing camfast never fails because the extension is missing or broken: it warns once and every
op falls back to another backend. `load_error()` keeps the reason for camfast.show_config().

CAMFAST_EXTENSION_PATH=<file> loads that build of camfast._C instead of the installed one (`make
sanitize` points it at the sanitizer build); as an explicit choice, it raises where it cannot load.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings

import torch

# The stable-ABI target the binary was compiled for (setup.py's TORCH_TARGET_VERSION).
MIN_TORCH = (2, 11)


def _torch_release(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _load_from(path: str) -> None:
    spec = importlib.util.spec_from_file_location(f"{__package__}._C", path)
    if spec is None:
        raise ImportError(f"CAMFAST_EXTENSION_PATH={path!r} is not a loadable extension")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # loading registers the camfast:: ops
    sys.modules[spec.name] = module


def _load() -> str | None:
    """Load camfast._C; return why it could not be loaded, or None."""
    running = _torch_release(torch.__version__)
    if running < MIN_TORCH:
        return (f"camfast's compiled kernels need torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}, "
                f"but torch {torch.__version__} is running")
    path = os.environ.get("CAMFAST_EXTENSION_PATH")
    if path:
        _load_from(path)
        return None
    try:
        from . import _C  # noqa: F401  (loading registers the camfast:: ops)
    except Exception as error:  # an absent build, or one this torch cannot load (e.g. CUDA build, CPU torch)
        return f"{type(error).__name__}: {error}"
    return None


_LOAD_ERROR = _load()
if _LOAD_ERROR is not None:
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
