"""Devices, backends, input layouts and the one tolerance table that every comparison uses."""

from __future__ import annotations

import pytest
import torch

from camfast import _backend

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Fixed tolerances against the reference in the same dtype.
TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float64: dict(atol=1e-10, rtol=1e-10),
}
# float16/bfloat16: the error against the float64 reference may be at most this many times the
# reference's own error in that dtype, plus a few units of roundoff of the result's magnitude.
LOW_PRECISION_FACTOR = 2.0
LOW_PRECISION_ULPS = 4.0

LAYOUTS = ("contiguous", "channels_last", "sliced_channels", "sliced_spatial")


def compiled_backends() -> list:
    """pytest params (device, backend) for every compiled backend usable here."""
    params = []
    for device in DEVICES:
        for backend in ("cpp", "triton"):
            if _backend.available(backend, torch.device(device))[0]:
                marks = [pytest.mark.triton] if backend == "triton" else []
                if device == "cuda":
                    marks.append(pytest.mark.cuda)
                params.append(pytest.param(device, backend, id=f"{device}-{backend}", marks=marks))
    return params


def dtypes_for(device: str, backend: str) -> list[torch.dtype]:
    """float64 is tested where the backend computes in it; low precision everywhere."""
    wide = [torch.float32] + ([torch.float64] if backend == "cpp" or device == "cpu" else [])
    return wide + [torch.float16, torch.bfloat16]


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of x, stored in one of LAYOUTS (sliced ones are non-contiguous views)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced_channels":  # channel stride 2*H*W: strided rows that still merge H and W
        wide = torch.empty(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype, device=x.device)
        wide[:, ::2] = x
        return wide[:, ::2]
    if layout == "sliced_spatial":  # W stride 2: H and W do not merge, kernels copy first
        wide = torch.empty(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    raise ValueError(layout)


def leaves(args, dtype=None) -> list:
    """Fresh leaf copies of the float tensor args (cast to dtype if given) that require grad."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            b = a.detach().to(dtype) if dtype is not None else a.detach().clone()
            if dtype is None:  # keep the caller's strides
                b = torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device=a.device).copy_(a)
            out.append(b.requires_grad_(True))
        else:
            out.append(a)
    return out


def outputs_and_grads(fn, args, grad_out, backward: bool) -> list:
    """fn(*args) and the grads of its float tensor args for grad_out, all detached."""
    out = fn(*args)
    grads = []
    if backward:
        diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        grads = torch.autograd.grad(out, diff, grad_out.to(out.dtype), allow_unused=True)
        grads = [g if g is None else g.detach() for g in grads]
    return [out.detach(), *grads]


def _max_abs(t: torch.Tensor, where: torch.Tensor) -> float:
    """Largest finite |t| over `where` (inf - inf from matching infinities counts as 0)."""
    values = t[where].abs().nan_to_num(nan=0.0, posinf=0.0)
    return values.max().item() if values.numel() else 0.0


def _low_precision_check(actual, low, exact, name: str, dtype: torch.dtype) -> None:
    if exact is None:
        assert actual is None and low is None, name
        return
    exact = exact.double()
    nan = exact.isnan()
    torch.testing.assert_close(actual.isnan(), nan, msg=f"{name}: NaN positions differ")
    finite = ~nan
    error = _max_abs(actual.double() - exact, finite)
    ref_error = _max_abs(low.double() - exact, finite)
    roundoff = LOW_PRECISION_ULPS * torch.finfo(dtype).eps * _max_abs(exact, finite)
    bound = LOW_PRECISION_FACTOR * ref_error + roundoff
    assert error <= bound, f"{name}: error {error:.3g} > bound {bound:.3g} (reference's own error {ref_error:.3g})"


def assert_matches_reference(fn, ref, *args, backward: bool = True, long_sums: bool = False) -> None:
    """fn(*args) and its gradients agree with ref(*args), under the project's tolerance rules.

    args may mix tensors and other values; every floating tensor is differentiated.
    long_sums: some result is a sum of hundreds of terms whose float32 roundoff (in any summation
    order, the reference's included) exceeds the fixed table; float32 then follows the
    low-precision rule against float64, like float16 and bfloat16.
    """
    args_fn = leaves(args)
    probe = ref(*leaves(args))
    grad_out = torch.randn(probe.shape, dtype=torch.float64, device=probe.device)
    actual = outputs_and_grads(fn, args_fn, grad_out, backward)
    names = ["output"] + [f"grad of arg {i}" for i, a in enumerate(args_fn) if isinstance(a, torch.Tensor) and a.requires_grad]
    dtype = probe.dtype
    if dtype in TOLERANCE and not (long_sums and dtype == torch.float32):
        expected = outputs_and_grads(ref, leaves(args), grad_out, backward)
        for name, a, e in zip(names, actual, expected):
            if e is None:
                assert a is None, name
                continue
            assert a.dtype == e.dtype and a.shape == e.shape, name
            torch.testing.assert_close(a, e, equal_nan=True, msg=lambda m: f"{name}: {m}", **TOLERANCE[dtype])
        return
    low = outputs_and_grads(ref, leaves(args), grad_out, backward)
    exact = outputs_and_grads(ref, leaves(args, torch.float64), grad_out, backward)
    for name, a, lo, ex in zip(names, actual, low, exact):
        if a is not None:
            assert a.dtype == dtype and a.shape == lo.shape, name
        _low_precision_check(a, lo, ex, name, dtype)


def assert_compiles_like_reference(fn, ref, *inputs) -> None:
    """torch.compile(fullgraph=True) of sum(fn(*inputs)^2) and its gradients equal the reference's.

    inputs are the differentiable tensors (leaves that require grad); fn and ref close over the rest.
    """
    torch._dynamo.reset()  # every op compiles this one lambda: start each from a clean cache
    compiled = torch.compile(lambda *t: fn(*t).square().sum(), fullgraph=True)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    detached = [t.detach().requires_grad_() for t in inputs]
    loss_ref = ref(*detached).square().sum()
    grads_ref = torch.autograd.grad(loss_ref, detached)
    torch.testing.assert_close(loss, loss_ref)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref)
