"""Smoke test of an installed camfast (run from outside the source tree, e.g. on a fresh wheel).

Imports camfast, prints show_config(), and checks one op on every backend usable here against the
reference, forward and backward. Exits non-zero on any failure.
"""

import sys
from pathlib import Path

import torch

import camfast
from camfast import _backend

SOURCE_TREE = Path(__file__).resolve().parent.parent


def main() -> int:
    location = Path(camfast.__file__).resolve()
    assert location.parent != SOURCE_TREE / "camfast", f"imported the source tree ({location}), not the install"
    camfast.show_config()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert _backend.available("cpp", device)[0], "the installed wheel has no compiled kernels for " + device.type
    x = torch.randn(4, 8, 7, 7, device=device).relu()
    expected = camfast.reference.thresholded_avg_pool2d(x, 0.1)
    for backend in ("cpp", "triton"):
        if not _backend.available(backend, device)[0]:
            print(f"{backend}: unavailable here ({_backend.available(backend, device)[1]})")
            continue
        xb = x.clone().requires_grad_()
        out = camfast.thresholded_avg_pool2d(xb, 0.1, backend=backend)
        torch.testing.assert_close(out, expected)
        out.sum().backward()
        assert xb.grad is not None and xb.grad.shape == x.shape
        print(f"{backend}: thresholded_avg_pool2d matches the reference")
    print(f"camfast {camfast.__version__} from {location.parent}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
