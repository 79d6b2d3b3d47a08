import torch

import camfast
from camfast import reference
from camfast_testing.checks import LAYOUTS, dtypes_for, in_layout
from camfast_testing.op_tester import LayerOpTester, every_backend
from test_spatial_softmax2d import SHAPES, SMALL_MAPS_MANY_CHANNELS, TEMPERATURE_ERRORS, edge_rows


class TestSpatialSoftArgmax2d(LayerOpTester):
    op = "spatial_soft_argmax2d"
    shapes = SHAPES
    large_shapes = (*LayerOpTester.large_shapes, (1, 2, 40, 33), SMALL_MAPS_MANY_CHANNELS)
    bad_options = [
        *TEMPERATURE_ERRORS,
        ({"temperature": "1"}, TypeError, "temperature must be a real"),
        ({"normalized_coordinates": 1}, TypeError, "normalized_coordinates must be a b"),
    ]

    def inputs(self, shape, dtype, device, layout):
        return (in_layout((3 * torch.randn(shape, device=device)).to(dtype), layout),)

    def options(self, x):
        return [dict(temperature=t, normalized_coordinates=n) for t, n in ((1.0, True), (0.3, True), (2.0, False))]

    def compile_options(self, x):
        return dict(temperature=0.5)

    def gradcheck_options(self, x):
        return [dict(temperature=0.7, normalized_coordinates=n) for n in (True, False)]

    def output_shape(self, shape):
        return (*shape[:2], 2)

    def op_args(self, x):
        return [(x, 0.5, True), (x, 2.0, False)]

    @every_backend
    def test_edge_rows(self, device, backend):
        x = edge_rows(device)
        for dtype in dtypes_for(device, backend):
            for layout in LAYOUTS:
                for normalized in (True, False):
                    self.assert_matches_reference(backend, in_layout(x.to(dtype), layout),
                                                  normalized_coordinates=normalized)

    @every_backend
    def test_known_positions(self, device, backend):
        """A sharp peak lands on its pixel; a size-1 axis gives coordinate 0 (documented)."""
        x = torch.full((1, 2, 3, 5), -1e4, device=device)
        x[0, 0, 2, 4] = 0.0  # bottom-right corner
        x[0, 1, 1, 2] = 0.0  # centre
        torch.testing.assert_close(self.call(backend, x), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], device=device))
        torch.testing.assert_close(self.call(backend, x, normalized_coordinates=False),
                                   torch.tensor([[[4.0, 2.0], [2.0, 1.0]]], device=device))
        row = torch.randn(2, 3, 1, 6, device=device)
        assert (self.call(backend, row)[..., 1] == 0).all()
        assert (self.call(backend, row.transpose(2, 3))[..., 0] == 0).all()


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
