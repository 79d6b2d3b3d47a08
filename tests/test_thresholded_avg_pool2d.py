import pytest
import torch

import camfast
from camfast import reference
from utils import LAYOUTS, assert_compiles_like_reference, assert_matches_reference, compiled_backends, dtypes_for, in_layout

OP = "thresholded_avg_pool2d"
BACKENDS = compiled_backends()


def tap(backend, tau=0.1):
    return lambda x: camfast.thresholded_avg_pool2d(x, tau, backend=backend)


def ref(tau=0.1):
    return lambda x: reference.thresholded_avg_pool2d(x, tau)


def shapes(backend):
    # The Triton interpreter runs one program at a time on CPU: keep its cases small.
    return [(2, 5, 7, 9), (1, 3, 1, 1)] if backend == "triton" else [(3, 70, 14, 14), (2, 5, 7, 9), (1, 3, 1, 1)]


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_matches_reference_on_random_inputs(device, backend):
    for dtype in dtypes_for(device, backend):
        for shape in shapes(backend):
            for layout in LAYOUTS:
                x = in_layout(torch.randn(shape, device=device).relu().to(dtype), layout)
                for tau in (0.1, 0.0, 1.0):
                    assert_matches_reference(tap(backend, tau), ref(tau), x)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_edge_rows(device, backend):
    """Ties at the threshold, zero, negative, NaN and +inf rows, as the authors' code gives them."""
    row = torch.tensor
    rows = {
        "tie at threshold": row([10.0, 1.0, 1.0, 0.5]),  # tau * max == 1: strict > drops both 1s
        "all zero": row([0.0, 0.0, 0.0, 0.0]),
        "negative": row([-1.0, -2.0, -3.0, -4.0]),
        "nan": row([1.0, float("nan"), 2.0, 3.0]),
        "+inf": row([1.0, float("inf"), 2.0, 3.0]),
        "-inf": row([1.0, float("-inf"), 2.0, 3.0]),
        "ties at max": row([2.0, 2.0, 1.0, 0.0]),
    }
    x = torch.stack(list(rows.values())).reshape(1, len(rows), 2, 2).to(device)
    expected = torch.tensor([[10.0, 0.0, 0.0, 0.0, 0.0, 2.0, 5.0 / 3.0]], device=device)
    for layout in LAYOUTS:
        xl = in_layout(x, layout)
        torch.testing.assert_close(camfast.thresholded_avg_pool2d(xl, 0.1, backend=backend), expected)
        assert_matches_reference(tap(backend), ref(), xl)
    # tau = 1 keeps nothing, not even ties at the maximum.
    torch.testing.assert_close(camfast.thresholded_avg_pool2d(x, 1.0, backend=backend), torch.zeros_like(expected))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_empty_batch_and_channels(device, backend):
    for shape in [(0, 4, 5, 5), (2, 0, 5, 5)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        out = camfast.thresholded_avg_pool2d(x, backend=backend)
        assert out.shape == shape[:2]
        out.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gradcheck(device, backend):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(tap(backend), (x,))
    assert torch.autograd.gradcheck(tap(backend), (x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(),))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend):
    op = getattr(torch.ops.camfast, OP + ("_triton" if backend == "triton" else ""))
    for layout in ("contiguous", "channels_last"):
        x = in_layout(torch.randn(2, 3, 4, 5, device=device), layout).requires_grad_()
        torch.library.opcheck(op, (x, 0.1))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    x = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    assert_compiles_like_reference(tap(backend), ref(), x)


BAD_INPUTS = [
    (lambda: torch.randn(2, 3, 4), {}, ValueError, "x must be 4-D"),
    (lambda: torch.ones(2, 3, 4, 4, dtype=torch.int64), {}, TypeError, "x must be float16"),
    (lambda: torch.randn(2, 3, 0, 4), {}, ValueError, "H > 0 and W > 0"),
    (lambda: torch.randn(2, 3, 4, 4), {"tau": 1.5}, ValueError, r"tau must lie in \[0, 1\]"),
    (lambda: torch.randn(2, 3, 4, 4), {"tau": float("nan")}, ValueError, "tau must lie in"),
    (lambda: torch.randn(2, 3, 4, 4), {"tau": torch.tensor(0.1)}, TypeError, "tau must be a real number"),
    (lambda: [[1.0]], {}, TypeError, "x must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", ["reference", *[p.values[1] for p in BACKENDS]])
@pytest.mark.parametrize("make,kwargs,error,message", BAD_INPUTS)
def test_bad_input_same_error_on_every_backend(backend, make, kwargs, error, message):
    with pytest.raises(error, match=message):
        camfast.thresholded_avg_pool2d(make(), backend=backend, **kwargs)


def test_module_drops_in_for_adaptive_avg_pool():
    pool = camfast.nn.ThresholdedAvgPool2d(tau=0.0)
    x = torch.rand(2, 3, 4, 4) + 0.1  # all positive: tau = 0 keeps everything, so it equals GAP
    torch.testing.assert_close(pool(x), torch.nn.AdaptiveAvgPool2d(1)(x))
    assert camfast.nn.ThresholdedAvgPool2d(flatten=True)(x).shape == (2, 3)
    assert "tau=0.0" in repr(pool)


def test_input_is_not_modified():
    x = torch.randn(2, 3, 4, 4)
    before = x.clone()
    camfast.thresholded_avg_pool2d(x)
    assert torch.equal(x, before)
