"""Smoke test of an installed camfast (run from outside the source tree, e.g. on a fresh wheel).

Imports camfast, prints show_config(), and checks every op on every backend usable here against
the reference: outputs, and for the layers the gradients for a random output gradient. Exits
non-zero on any failure.
"""

import sys
from pathlib import Path

import torch

import camfast
from camfast import _backend, reference

SOURCE_TREE = Path(__file__).resolve().parent.parent


def cases(device: torch.device):
    """(name, camfast call taking backend=, reference call, inputs, differentiable)."""
    x = torch.randn(4, 8, 7, 7, device=device)
    s = torch.softmax(torch.randn(4, 8, device=device), dim=1)
    m = torch.rand(4, 1, 7, 7, device=device)
    image = torch.rand(2, 3, 16, 16, device=device)
    keep = torch.zeros(4, dtype=torch.bool, device=device)
    return [
        ("thresholded_avg_pool2d", camfast.thresholded_avg_pool2d, reference.thresholded_avg_pool2d, (x.relu(),), True),
        ("adl", lambda t, **kw: camfast.adl(t, use_drop=False, **kw), lambda t: reference.adl(t, keep), (x,), True),
        ("spatial_softmax2d", camfast.spatial_softmax2d, reference.spatial_softmax2d, (x,), True),
        ("spatial_soft_argmax2d", camfast.spatial_soft_argmax2d, reference.spatial_soft_argmax2d, (x,), True),
        ("channel_spatial_attention", camfast.channel_spatial_attention, reference.channel_spatial_attention, (x, s), True),
        ("attention_branch_mix", camfast.attention_branch_mix, reference.attention_branch_mix, (x, m), True),
        ("score_cam_masks", camfast.score_cam_masks, reference.score_cam_masks, (x[:2], image), False),
        ("weighted_channel_sum", camfast.weighted_channel_sum, reference.weighted_channel_sum, (x.relu(), x.flip(0)),
         False),
    ]


def check(name, fn, ref, inputs, differentiable, backend) -> None:
    leaves = [t.clone().requires_grad_(differentiable) for t in inputs]
    out = fn(*leaves, backend=backend)
    torch.testing.assert_close(out, ref(*inputs), msg=lambda m: f"{name}: output: {m}")
    if differentiable:
        grad_out = torch.randn_like(out)
        ref_leaves = [t.clone().requires_grad_() for t in inputs]
        grads = torch.autograd.grad(out, leaves, grad_out)
        expected = torch.autograd.grad(ref(*ref_leaves), ref_leaves, grad_out)
        for i, (grad, grad_ref) in enumerate(zip(grads, expected)):
            torch.testing.assert_close(grad, grad_ref, msg=lambda m: f"{name}: gradient of input {i}: {m}")


def main() -> int:
    location = Path(camfast.__file__).resolve()
    assert location.parent != SOURCE_TREE / "camfast", f"imported the source tree ({location}), not the install"
    camfast.show_config()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert _backend.available("cpp", device)[0], "the installed wheel has no compiled kernels for " + device.type
    for backend in ("cpp", "triton"):
        usable, why = _backend.available(backend, device)
        if not usable:
            print(f"{backend}: unavailable here ({why})")
            continue
        for name, *case in cases(device):
            check(name, *case, backend)
        print(f"{backend}: every op matches the reference")
    print(f"camfast {camfast.__version__} from {location.parent}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
