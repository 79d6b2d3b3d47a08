import pytest
import torch

import camfast
from camfast import reference
from utils import LAYOUTS, assert_compiles_like_reference, assert_matches_reference, compiled_backends, dtypes_for, in_layout

OP = "spatial_softmax2d"
BACKENDS = compiled_backends()
NAN, INF = float("nan"), float("inf")

# Rows of 4 values (2x2 maps) with torch.softmax's answers: NaN and +inf poison the row, a row of
# only -inf is NaN, a single -inf gets 0, ties share.
EDGE_ROWS = {
    "nan": [1.0, NAN, 2.0, 3.0],
    "+inf": [1.0, INF, 2.0, 3.0],
    "two +inf": [INF, INF, 1.0, 1.0],
    "all -inf": [-INF, -INF, -INF, -INF],
    "one -inf": [1.0, -INF, 2.0, 3.0],
    "ties at max": [2.0, 2.0, 1.0, 0.0],
    "constant": [5.0, 5.0, 5.0, 5.0],
    "huge spread": [1e30, -1e30, 0.0, 1e30],
}


def softmax(backend, temperature=1.0):
    return lambda x: camfast.spatial_softmax2d(x, temperature, backend=backend)


def ref(temperature=1.0):
    return lambda x: reference.spatial_softmax2d(x, temperature)


def shapes(backend):
    # The Triton interpreter runs one program at a time on CPU: keep its cases small.
    small = [(2, 5, 7, 9), (1, 3, 1, 1), (2, 3, 1, 6), (2, 3, 6, 1)]
    return small if backend == "triton" else [(3, 70, 14, 14), *small]


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_matches_reference_on_random_inputs(device, backend):
    for dtype in dtypes_for(device, backend):
        for shape in shapes(backend):
            for layout in LAYOUTS:
                x = in_layout((3 * torch.randn(shape, device=device)).to(dtype), layout)
                for temperature in (1.0, 0.3, 4.0):
                    assert_matches_reference(softmax(backend, temperature), ref(temperature), x)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_edge_rows(device, backend):
    x = torch.tensor(list(EDGE_ROWS.values()), device=device).reshape(1, len(EDGE_ROWS), 2, 2)
    for dtype in dtypes_for(device, backend):
        expected = torch.softmax(x.to(dtype).double().flatten(2), dim=-1).view_as(x).to(dtype)
        for layout in LAYOUTS:
            xl = in_layout(x.to(dtype), layout)
            torch.testing.assert_close(softmax(backend)(xl), expected, equal_nan=True)
            assert_matches_reference(softmax(backend), ref(), xl)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_output_layout_follows_input(device, backend):
    x = torch.randn(2, 4, 3, 5, device=device)
    assert softmax(backend)(x).is_contiguous()
    assert softmax(backend)(x.contiguous(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_mixed_gradient_layout(device, backend):
    """The incoming gradient need not share x's layout."""
    x = torch.randn(2, 4, 3, 5, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(2, 4, 3, 5, device=device)
    (actual,) = torch.autograd.grad(softmax(backend)(x), x, grad)
    (expected,) = torch.autograd.grad(ref()(x), x, grad)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_empty_batch_and_channels(device, backend):
    for shape in [(0, 4, 5, 5), (2, 0, 5, 5)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        out = softmax(backend)(x)
        assert out.shape == shape
        out.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gradcheck(device, backend):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(softmax(backend, 0.7), (x,))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(softmax(backend, 0.7), (x_cl,))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend):
    op = getattr(torch.ops.camfast, OP + ("_triton" if backend == "triton" else ""))
    for layout in ("contiguous", "channels_last"):
        x = in_layout(torch.randn(2, 3, 4, 5, device=device), layout).requires_grad_()
        torch.library.opcheck(op, (x, 0.5))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    x = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    assert_compiles_like_reference(softmax(backend, 0.5), ref(0.5), x)


BAD_INPUTS = [
    (lambda: torch.randn(2, 3, 4), {}, ValueError, "x must be 4-D"),
    (lambda: torch.ones(2, 3, 4, 4, dtype=torch.int64), {}, TypeError, "x must be float16"),
    (lambda: torch.randn(2, 3, 0, 4), {}, ValueError, "H > 0 and W > 0"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": -1.0}, ValueError, "temperature must be a finite number > 0"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": float("inf")}, ValueError, "temperature must be a finite"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": float("nan")}, ValueError, "temperature must be a finite"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": torch.tensor(1.0)}, TypeError, "temperature must be a real"),
    (lambda: [[1.0]], {}, TypeError, "x must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", ["reference", *[p.values[1] for p in BACKENDS]])
@pytest.mark.parametrize("make,kwargs,error,message", BAD_INPUTS)
def test_bad_input_same_error_on_every_backend(backend, make, kwargs, error, message):
    with pytest.raises(error, match=message):
        camfast.spatial_softmax2d(make(), backend=backend, **kwargs)


def test_module_and_learnable_temperature():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(camfast.nn.SpatialSoftmax2d(0.5)(x), reference.spatial_softmax2d(x, 0.5))
    module = camfast.nn.SpatialSoftmax2d(0.5, learnable=True)
    assert isinstance(module.temperature, torch.nn.Parameter)
    grad_out = torch.randn(2, 3, 4, 5)
    (module(x) * grad_out).sum().backward()
    t = torch.tensor(0.5, requires_grad=True)
    (reference.spatial_softmax2d(x / t, 1.0) * grad_out).sum().backward()
    torch.testing.assert_close(module.temperature.grad, t.grad)
    assert "learnable=True" in repr(module) and "temperature=0.5" in repr(module)


def test_input_is_not_modified():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    before = x.detach().clone()
    camfast.spatial_softmax2d(x).sum().backward()
    assert torch.equal(x.detach(), before)
