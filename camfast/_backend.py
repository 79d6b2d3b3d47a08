"""Which implementation runs an op: the `backend=` argument of every public function.

"cpp"       camfast._C (CPU, and CUDA when compiled with it)
"triton"    Triton kernels (CUDA; CPU only under TRITON_INTERPRET=1, for testing)
"reference" the plain PyTorch specification in camfast.reference
None/"auto" the CAMFAST_BACKEND environment variable if set, else the compiled op for the
            tensor's device, else Triton on CUDA, else the reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

from . import _extension

BACKENDS = ("cpp", "triton", "reference")


def _probe_triton() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    return False, "no CUDA device, and TRITON_INTERPRET=1 is not set"


_TRITON_STATUS = _probe_triton()


def triton_status() -> tuple[bool, str]:
    """(usable, why not) for Triton; on CPU it runs only under the interpreter."""
    return _TRITON_STATUS


def available(backend: str, device: torch.device) -> tuple[bool, str]:
    """(usable, why not) for a backend on a device."""
    if backend == "reference":
        return True, ""
    if backend == "cpp":
        if _extension.has_cpp(device.type):
            return True, ""
        return False, _extension.load_error() or f"camfast._C was built without {device.type} kernels"
    if backend == "triton":
        usable, why = triton_status()
        if usable and device.type not in ("cuda", "cpu"):
            return False, f"Triton does not run on {device.type}"
        return usable, why
    raise ValueError(f"backend must be one of {BACKENDS}, None or 'auto', got {backend!r}")


def resolve(backend: str | None, device: torch.device) -> str:
    """The backend that runs on `device`, raising if an explicit choice cannot."""
    if backend in (None, "auto"):
        backend = os.environ.get("CAMFAST_BACKEND") or "auto"
    if backend == "auto":
        if available("cpp", device)[0]:
            return "cpp"
        if device.type == "cuda" and available("triton", device)[0]:
            return "triton"
        return "reference"
    usable, why = available(backend, device)
    if not usable:
        raise RuntimeError(f"backend={backend!r} is unavailable on {device.type}: {why}")
    return backend


def op(stem: str, backend: str):
    """The camfast:: op of a compiled backend ("cpp" or "triton") for an op stem."""
    return getattr(torch.ops.camfast, f"{stem}_triton" if backend == "triton" else stem)


def load_triton_ops() -> None:
    """Define every camfast::<stem>_triton op when Triton can run here.

    Done at import rather than on first use because torch.compile cannot trace an import.
    """
    if triton_status()[0]:
        importlib.import_module("camfast.triton").load_all()
