"""Mixed dtypes follow torch's type promotion, and torch.autocast runs the ops in its dtype, the
same on every backend; a training step of a model using every layer runs under CPU autocast."""

from __future__ import annotations

import pytest
import torch

from camfast import _backend
from camfast_testing.op_tester import BACKEND_NAMES, all_op_testers
from camfast_testing.layer_models import EveryLayer

TESTERS = {tester.op: tester for tester in all_op_testers()}
# Ops with several floating tensor inputs.
MULTI_INPUT = sorted(op for op, tester in TESTERS.items()
                     if sum(t.is_floating_point() for t in tester.valid_inputs()) > 1)
COMPILED = [name for name in BACKEND_NAMES if name != "reference"]
# (first input's dtype, the others' dtype)
MIXES = [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16), (torch.float16, torch.bfloat16),
         (torch.float32, torch.float64)]


def _call(op: str, backend: str, inputs, grad: bool = False):
    """The op's first output, and with grad the gradients of its inputs (in their own dtypes)."""
    tester = TESTERS[op]
    inputs = [t.detach().requires_grad_(grad and tester.differentiable) for t in inputs]
    out = tester.call(backend, *inputs, **tester.options(*inputs)[0])
    if not (grad and tester.differentiable):
        return [out.detach()]
    grads = torch.autograd.grad(out, inputs, torch.ones_like(out))
    return [out.detach(), *grads]


def test_the_multi_input_ops_are_known():
    assert MULTI_INPUT == ["attention_branch_mix", "channel_spatial_attention", "score_cam_masks", "weighted_channel_sum"]


@pytest.mark.parametrize("op", MULTI_INPUT)
@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("first,rest", MIXES, ids=lambda d: str(d).replace("torch.", ""))
def test_mixed_dtypes_follow_type_promotion(op, backend, first, rest):
    inputs = TESTERS[op].valid_inputs()
    mixed = [inputs[0].to(first), *[t.to(rest) for t in inputs[1:]]]
    common = torch.promote_types(first, rest)
    actual = _call(op, backend, mixed, grad=True)
    expected = _call(op, backend, [t.to(common) for t in mixed], grad=True)
    assert actual[0].dtype == common
    torch.testing.assert_close(actual[0], expected[0], rtol=0, atol=0)
    for grad, grad_common, t in zip(actual[1:], expected[1:], mixed[: len(actual) - 1], strict=True):
        assert grad.dtype == t.dtype  # each gradient comes back in its input's dtype
        torch.testing.assert_close(grad, grad_common.to(t.dtype), rtol=0, atol=0)


@pytest.mark.parametrize("op", sorted(TESTERS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_autocast_gives_the_same_dtype_and_values_on_every_backend(op, dtype):
    """Several floating inputs: the autocast dtype (the dtype of the region, not a fixed one).
    One input: the input's dtype, as torch's own elementwise ops and reductions."""
    inputs = TESTERS[op].valid_inputs()
    expected_dtype = dtype if op in MULTI_INPUT else torch.float32
    for backend in BACKEND_NAMES:
        with torch.autocast("cpu", dtype=dtype):
            out = _call(op, backend, inputs)[0]
        assert out.dtype == expected_dtype, backend
        exact = _call(op, backend, [t.to(expected_dtype) for t in inputs])[0]
        torch.testing.assert_close(out, exact, rtol=0, atol=0)


@pytest.mark.parametrize("op", MULTI_INPUT)
@pytest.mark.parametrize("backend", COMPILED)
def test_the_compiled_ops_carry_an_autocast_rule(op, backend):
    """torch.ops.camfast.<op> called directly (as in an exported graph) casts like the function."""
    tester = TESTERS[op]
    args = tester.op_args(*tester.valid_inputs())[0]
    compiled = _backend.op(op, backend)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            out = compiled(*args)
        out = out[0] if isinstance(out, tuple) else out
        assert out.dtype == dtype
    float64 = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    with torch.autocast("cpu"):
        out = compiled(*float64)
    assert (out[0] if isinstance(out, tuple) else out).dtype == torch.float64  # autocast leaves float64


def test_compiled_function_under_autocast():
    a, s = TESTERS["channel_spatial_attention"].valid_inputs()
    fn = lambda a, s: TESTERS["channel_spatial_attention"].call(None, a, s)  # noqa: E731
    torch._dynamo.reset()
    with torch.autocast("cpu"):
        compiled, eager = torch.compile(fn, fullgraph=True)(a, s), fn(a, s)
    assert compiled.dtype == torch.bfloat16
    torch.testing.assert_close(compiled, eager)


def _training_step(autocast: bool):
    """Loss and gradients of one step of EveryLayer on a fixed batch (the same ADL draw each time)."""
    torch.manual_seed(0)
    model = EveryLayer(generator=torch.Generator().manual_seed(1))
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", enabled=autocast):
        result = model(images)
        loss = model.loss(result, labels)
    loss.backward()  # outside the region, as torch's AMP recipe does
    return result, loss, {name: p.grad for name, p in model.named_parameters()}


def test_training_step_under_cpu_autocast():
    result, loss, grads = _training_step(autocast=True)
    logits, branch_logits, s = result
    assert logits.dtype == branch_logits.dtype == s.dtype == torch.bfloat16
    _, loss32, grads32 = _training_step(autocast=False)
    torch.testing.assert_close(loss.float(), loss32, rtol=0.02, atol=0)
    # bfloat16 keeps 8 bits. Errors are measured against the whole gradient's norm: some
    # gradients are zero in exact arithmetic (a BatchNorm bias followed by another BatchNorm).
    scale = torch.cat([g.flatten() for g in grads32.values()]).norm()
    for name, grad in grads.items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        error = (grad - grads32[name]).norm() / scale
        assert error < 0.05, f"{name}: error {error:.3g} of the float32 gradient's norm"
