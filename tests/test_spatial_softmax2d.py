import torch

import camfast
from camfast import reference
from camfast_testing.checks import LAYOUTS, dtypes_for, in_layout
from camfast_testing.op_tester import LayerOpTester, every_backend

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
# Single rows and single columns, besides the default odd sizes and 1x1 maps.
SHAPES = ((2, 5, 7, 9), (1, 3, 1, 1), (2, 3, 1, 6), (2, 3, 6, 1))
# Maps under 16 pixels over more channels than one block: the CPU kernels transpose such NCHW
# rows into blocks of 64 channels.
SMALL_MAPS_MANY_CHANNELS = (3, 70, 3, 3)
TEMPERATURE_ERRORS = [
    ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
    ({"temperature": float("inf")}, ValueError, "temperature must be a finite"),
]


def edge_rows(device):
    return torch.tensor(list(EDGE_ROWS.values()), device=device).reshape(1, len(EDGE_ROWS), 2, 2)


class TestSpatialSoftmax2d(LayerOpTester):
    op = "spatial_softmax2d"
    shapes = SHAPES
    large_shapes = (*LayerOpTester.large_shapes, SMALL_MAPS_MANY_CHANNELS)
    bad_options = [
        *TEMPERATURE_ERRORS,
        ({"temperature": -1.0}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": float("nan")}, ValueError, "temperature must be a finite"),
        ({"temperature": torch.tensor(1.0)}, TypeError, "temperature must be a real"),
    ]

    def inputs(self, shape, dtype, device, layout):
        return (in_layout((3 * torch.randn(shape, device=device)).to(dtype), layout),)

    def options(self, x):
        return [dict(temperature=t) for t in (1.0, 0.3, 4.0)]

    def compile_options(self, x):
        return dict(temperature=0.5)

    def gradcheck_options(self, x):
        return [dict(temperature=0.7)]

    def op_args(self, x):
        return [(x, 0.5)]

    @every_backend
    def test_edge_rows(self, device, backend):
        x = edge_rows(device)
        for dtype in dtypes_for(device, backend):
            expected = torch.softmax(x.to(dtype).double().flatten(2), dim=-1).view_as(x).to(dtype)
            for layout in LAYOUTS:
                xl = in_layout(x.to(dtype), layout)
                torch.testing.assert_close(self.call(backend, xl), expected, equal_nan=True)
                self.assert_matches_reference(backend, xl)

    @every_backend
    def test_output_layout_follows_input(self, device, backend):
        x = torch.randn(2, 4, 3, 5, device=device)
        assert self.call(backend, x).is_contiguous()
        assert self.call(backend, x.contiguous(memory_format=torch.channels_last)).is_contiguous(
            memory_format=torch.channels_last)

    @every_backend
    def test_mixed_gradient_layout(self, device, backend):
        """The incoming gradient need not share x's layout."""
        x = torch.randn(2, 4, 3, 5, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
        grad = torch.randn(2, 4, 3, 5, device=device)
        (actual,) = torch.autograd.grad(self.call(backend, x), x, grad)
        (expected,) = torch.autograd.grad(self.ref(x), x, grad)
        torch.testing.assert_close(actual, expected)


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
