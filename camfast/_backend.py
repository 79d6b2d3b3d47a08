"""Which implementation runs an op: the `backend=` argument of every public function.

"cpp"       camfast._C (CPU, and CUDA when compiled with it)
"triton"    Triton kernels (CUDA; CPU only under TRITON_INTERPRET=1, for testing)
"reference" the plain PyTorch specification in camfast.reference
None/"auto" the CAMFAST_BACKEND environment variable if set, else the compiled op for the
            tensor's device, else Triton on CUDA, else the reference.
Under forward-mode AD and during torch.onnx.export, every choice runs the reference (choose()).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import torch
from torch.autograd import forward_ad

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


def _carries_tangent(tensors) -> bool:
    return any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def _exporting_to_onnx() -> bool:
    onnx = sys.modules.get("torch.onnx")  # not imported: not exporting (and no import cost)
    return onnx is not None and onnx.is_in_onnx_export()


def choose(backend: str | None, *inputs: torch.Tensor) -> str:
    """The backend that runs an op on `inputs` (tensors on one device), after resolve().

    The reference (plain PyTorch, the specification) runs instead of any backend where the
    compiled ops cannot follow:
    - an input carries a forward-mode tangent (torch.func.jvp, jacfwd, forward_ad dual tensors):
      torch.library gives custom ops no forward-mode formula, and a custom op would silently drop
      the tangent; the reference's derivative is the specification's;
    - torch.onnx.export is tracing: the exported graph then holds the reference's ATen ops, which
      the exporter translates, instead of camfast ops that ONNX Runtime does not know.
    """
    chosen = resolve(backend, inputs[0].device)
    if chosen != "reference" and (_carries_tangent(inputs) or _exporting_to_onnx()):
        return "reference"
    return chosen


def op(stem: str, backend: str):
    """The camfast:: op of a compiled backend ("cpp" or "triton") for an op stem."""
    return getattr(torch.ops.camfast, f"{stem}_triton" if backend == "triton" else stem)


def run(stem: str, backend: str, *args):
    """op(stem, backend)(*args), straight to the kernel when no autograd graph is to be recorded.

    Every op's autograd kernel (torch.library.register_autograd) runs in Python: when no input
    requires grad, it only re-dispatches below autograd, which costs about 5 us of a 10 us call
    on small maps. Skipping it here is that same re-dispatch, decided before the call. The op goes
    through the dispatcher as usual while torch.compile or torch.export trace, or inside a
    torch.func transform, which track their own state.
    """
    call = op(stem, backend)
    if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None \
            or (torch._C.is_grad_enabled() and torch._C._any_requires_grad(*args)):
        return call(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return call(*args)


def load_triton_ops() -> None:
    """Define every camfast::<stem>_triton op when Triton can run here.

    Done at import rather than on first use because torch.compile cannot trace an import.
    """
    if triton_status()[0]:
        importlib.import_module("camfast.triton").load_all()
