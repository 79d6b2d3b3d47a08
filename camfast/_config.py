"""camfast.show_config(): what this installation can run, and why anything is missing."""

from __future__ import annotations

import sys

import torch

from . import _backend, _extension
from ._version import __version__


def config() -> dict[str, str]:
    """The facts show_config() prints, as a dict.

    Example:
        >>> from camfast._config import config
        >>> sorted(config())[:3]
        ['camfast', 'cpp backend, cpu', 'cpp backend, cuda']
    """
    info = _extension.build_info()
    archs = _extension.cuda_archs()
    triton_ok, triton_why = _backend.triton_status()
    cpp_why = _extension.load_error()
    facts = {
        "camfast": __version__,
        "python": sys.version.split()[0],
        "torch (running)": torch.__version__,
        "torch (built against)": info.get("torch", "-"),
        "cpp backend, cpu": "yes" if _extension.has_cpp("cpu") else f"no ({cpp_why})",
        "cpp backend, cuda": "archs " + ", ".join(f"sm_{a}" for a in archs) if archs
        else f"no ({cpp_why or 'built without CUDA'})",
        "triton backend": "yes" if triton_ok else f"no ({triton_why})",
        "cuda device": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }
    return facts


def show_config() -> None:
    """Print the version, the torch it was built against, compiled backends and Triton status.

    Example:
        >>> import camfast
        >>> camfast.show_config()  # doctest: +ELLIPSIS
        camfast ...
        torch (running) ...
        cpp backend, cpu ...
    """
    facts = config()
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
