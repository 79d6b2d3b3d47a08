import pytest
import torch

import camfast
from camfast import reference
from test_spatial_softmax2d import EDGE_ROWS
from utils import LAYOUTS, assert_compiles_like_reference, assert_matches_reference, compiled_backends, dtypes_for, in_layout

OP = "spatial_soft_argmax2d"
BACKENDS = compiled_backends()


def argmax(backend, temperature=1.0, normalized=True):
    return lambda x: camfast.spatial_soft_argmax2d(x, temperature, normalized, backend=backend)


def ref(temperature=1.0, normalized=True):
    return lambda x: reference.spatial_soft_argmax2d(x, temperature, normalized)


def shapes(backend):
    # The Triton interpreter runs one program at a time on CPU: keep its cases small.
    small = [(2, 5, 7, 9), (1, 3, 1, 1), (2, 3, 1, 6), (2, 3, 6, 1)]
    return small if backend == "triton" else [(3, 70, 14, 14), (1, 2, 40, 33), *small]


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_matches_reference_on_random_inputs(device, backend):
    for dtype in dtypes_for(device, backend):
        for shape in shapes(backend):
            for layout in LAYOUTS:
                x = in_layout((3 * torch.randn(shape, device=device)).to(dtype), layout)
                for temperature, normalized in ((1.0, True), (0.3, True), (2.0, False)):
                    assert_matches_reference(argmax(backend, temperature, normalized), ref(temperature, normalized), x)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_edge_rows(device, backend):
    x = torch.tensor(list(EDGE_ROWS.values()), device=device).reshape(1, len(EDGE_ROWS), 2, 2)
    for dtype in dtypes_for(device, backend):
        for layout in LAYOUTS:
            xl = in_layout(x.to(dtype), layout)
            for normalized in (True, False):
                assert_matches_reference(argmax(backend, 1.0, normalized), ref(1.0, normalized), xl)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_known_positions(device, backend):
    """A sharp peak lands on its pixel; a size-1 axis gives coordinate 0 (documented)."""
    x = torch.full((1, 2, 3, 5), -1e4, device=device)
    x[0, 0, 2, 4] = 0.0  # bottom-right corner
    x[0, 1, 1, 2] = 0.0  # centre
    torch.testing.assert_close(argmax(backend)(x), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], device=device))
    torch.testing.assert_close(argmax(backend, 1.0, False)(x), torch.tensor([[[4.0, 2.0], [2.0, 1.0]]], device=device))
    row = torch.randn(2, 3, 1, 6, device=device)
    assert (argmax(backend)(row)[..., 1] == 0).all()
    assert (argmax(backend)(row.transpose(2, 3))[..., 0] == 0).all()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_empty_batch_and_channels(device, backend):
    for shape in [(0, 4, 5, 5), (2, 0, 5, 5)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        out = argmax(backend)(x)
        assert out.shape == (*shape[:2], 2)
        out.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gradcheck(device, backend):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    for normalized in (True, False):
        assert torch.autograd.gradcheck(argmax(backend, 0.7, normalized), (x,))
        assert torch.autograd.gradcheck(argmax(backend, 0.7, normalized), (x_cl,))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend):
    op = getattr(torch.ops.camfast, OP + ("_triton" if backend == "triton" else ""))
    for layout in ("contiguous", "channels_last"):
        x = in_layout(torch.randn(2, 3, 4, 5, device=device), layout).requires_grad_()
        torch.library.opcheck(op, (x, 0.5, True))
        torch.library.opcheck(op, (x, 2.0, False))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    x = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    assert_compiles_like_reference(argmax(backend, 0.5), ref(0.5), x)


BAD_INPUTS = [
    (lambda: torch.randn(2, 3, 4), {}, ValueError, "x must be 4-D"),
    (lambda: torch.ones(2, 3, 4, 4, dtype=torch.int64), {}, TypeError, "x must be float16"),
    (lambda: torch.randn(2, 3, 4, 0), {}, ValueError, "H > 0 and W > 0"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": float("inf")}, ValueError, "temperature must be a finite"),
    (lambda: torch.randn(2, 3, 4, 4), {"temperature": "1"}, TypeError, "temperature must be a real"),
    (lambda: torch.randn(2, 3, 4, 4), {"normalized_coordinates": 1}, TypeError, "normalized_coordinates must be a b"),
    (lambda: [[1.0]], {}, TypeError, "x must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", ["reference", *[p.values[1] for p in BACKENDS]])
@pytest.mark.parametrize("make,kwargs,error,message", BAD_INPUTS)
def test_bad_input_same_error_on_every_backend(backend, make, kwargs, error, message):
    with pytest.raises(error, match=message):
        camfast.spatial_soft_argmax2d(make(), backend=backend, **kwargs)


def test_module_and_learnable_temperature():
    x = torch.randn(2, 3, 4, 5)
    module = camfast.nn.SpatialSoftArgmax2d(0.5, normalized_coordinates=False)
    torch.testing.assert_close(module(x), reference.spatial_soft_argmax2d(x, 0.5, False))
    learnable = camfast.nn.SpatialSoftArgmax2d(0.5, learnable=True)
    grad_out = torch.randn(2, 3, 2)
    (learnable(x) * grad_out).sum().backward()
    t = torch.tensor(0.5, requires_grad=True)
    (reference.spatial_soft_argmax2d(x / t) * grad_out).sum().backward()
    torch.testing.assert_close(learnable.temperature.grad, t.grad)
    assert "normalized_coordinates=False" in repr(module)


def test_input_is_not_modified():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    before = x.detach().clone()
    camfast.spatial_soft_argmax2d(x).sum().backward()
    assert torch.equal(x.detach(), before)
