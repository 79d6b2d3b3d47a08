"""Forward-mode AD (torch.func.jvp, jacfwd, forward_ad dual tensors) through every op and module on
every backend gives the reference's tangents; double backward works on the reference and raises
clearly on the compiled backends."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import forward_ad

from camfast_testing.op_tester import BACKEND_NAMES, all_op_testers
from camfast_testing.layer_models import modules, outputs

TESTERS = {tester.op: tester for tester in all_op_testers()}
COMPILED = [name for name in BACKEND_NAMES if name != "reference"]


def _variants(op: str, smooth: bool = False):
    """(function on each backend, reference function, float64 inputs) for every option of the op;
    smooth: only the options gradcheck runs (finite differences may cross a kink in the others)."""
    tester = TESTERS[op]
    inputs = tester.inputs(tester.small_shape, torch.float64, "cpu", "contiguous")
    for options in (tester.gradcheck_options if smooth else tester.options)(*inputs):
        yield (lambda backend: lambda *t: tester.call(backend, *t, **options)), \
            (lambda *t: tester.ref(*t, **options)), inputs


@pytest.mark.parametrize("op", sorted(TESTERS))
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_jvp_and_dual_tensors_match_the_reference(op, backend):
    for on, ref, inputs in _variants(op):
        tangents = tuple(torch.randn_like(t) for t in inputs)
        expected = torch.func.jvp(ref, inputs, tangents)
        torch.testing.assert_close(torch.func.jvp(on(backend), inputs, tangents), expected)
        with forward_ad.dual_level():
            out = on(backend)(*[forward_ad.make_dual(t, dt) for t, dt in zip(inputs, tangents)])
            primal, tangent = forward_ad.unpack_dual(out)
        assert tangent is not None
        torch.testing.assert_close((primal, tangent), expected)


@pytest.mark.parametrize("op", sorted(op for op, tester in TESTERS.items() if tester.differentiable))
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_jacfwd_equals_the_backward_jacobian(op, backend):
    """jacfwd (forward mode) against the Jacobian autograd builds row by row from the backend's
    own backward: two independent derivatives of the same function."""
    for on, _, inputs in _variants(op):
        argnums = tuple(range(len(inputs)))
        forward = torch.func.jacfwd(on(backend), argnums=argnums)(*inputs)
        backward = torch.autograd.functional.jacobian(on(backend), inputs)
        torch.testing.assert_close(forward, backward)


@pytest.mark.parametrize("name", sorted(modules()))
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_module_tangents_match_the_reference_module(name, backend):
    x, dx = torch.randn(2, 8, 5, 5, dtype=torch.float64), torch.randn(2, 8, 5, 5, dtype=torch.float64)
    torch.manual_seed(0)
    module = modules(backend)[name].double()
    torch.manual_seed(0)
    ref = modules("reference")[name].double()
    for m in (module, ref):  # ADL: one branch, the differentiable one
        if name == "ADL":
            m.drop_rate = 0.0
    # Dual tensors rather than torch.func.jvp: BatchNorm updates its running statistics in
    # training mode, which functorch's transforms refuse.
    with forward_ad.dual_level():
        actual = [forward_ad.unpack_dual(out) for out in outputs(module(forward_ad.make_dual(x, dx)))]
        expected = [forward_ad.unpack_dual(out) for out in outputs(ref(forward_ad.make_dual(x, dx)))]
    torch.testing.assert_close(actual, expected)
    assert any(tangent.abs().sum() > 0 for _, tangent in actual)


@pytest.mark.parametrize("op", sorted(op for op, tester in TESTERS.items() if tester.differentiable))
def test_double_backward_works_on_the_reference_and_raises_clearly_elsewhere(op):
    for on, _, inputs in _variants(op, smooth=True):
        inputs = tuple(t.requires_grad_() for t in inputs)
        assert torch.autograd.gradgradcheck(on("reference"), inputs)
        for backend in COMPILED:
            out = on(backend)(*inputs)
            grads = torch.autograd.grad(out, inputs, torch.randn_like(out), create_graph=True)
            with pytest.raises(RuntimeError, match=rf"camfast::_{op}_backward\w*: double backward is not supported"):
                torch.autograd.grad(sum(g.sum() for g in grads), inputs)
