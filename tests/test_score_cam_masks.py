import pytest
import torch
import torch.nn.functional as F

import camfast
from camfast import reference
from camfast_testing.checks import in_layout
from camfast_testing.op_tester import OpTester, every_backend, every_backend_and_reference

STAGES = ("upsampled", "feature")


def test_reference_follows_the_authors_loop():
    """Per channel: upsample, skip a constant map, min-max over the upsampled map, times the image.

    (Random maps: the authors' test max(up) == min(up) agrees with ours there.)
    """
    act = torch.randn(1, 5, 7, 7, dtype=torch.float64)
    act[0, 2] = 0.0  # an all-zero channel, the usual constant map after a ReLU
    image = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    out, constant = reference.score_cam_masks(act, image, return_constant=True)
    for k in range(5):
        up = F.interpolate(act[:, k : k + 1], size=(32, 32), mode="bilinear", align_corners=False)
        if up.max() == up.min():
            assert constant[0, k] and not out[0, k].any()
            continue
        expected = (up - up.min()) / (up.max() - up.min()) * image
        torch.testing.assert_close(out[0, k], expected[0], rtol=0, atol=0)
    assert constant.tolist() == [[False, False, True, False, False]]


class TestScoreCamMasks(OpTester):
    """Shapes are (act shape, image shape) pairs."""

    op = "score_cam_masks"
    # Odd sizes, up- and downsampling, 1x1 maps, one image channel; the last keeps H, where
    # F.interpolate copies rows.
    shapes = (((2, 3, 5, 7), (2, 3, 9, 13)), ((1, 2, 1, 1), (1, 3, 4, 5)), ((1, 2, 6, 4), (1, 1, 3, 5)),
              ((1, 2, 6, 4), (1, 3, 6, 9)))
    large_shapes = (((2, 16, 7, 7), (2, 3, 56, 56)),)
    small_shape = ((2, 3, 4, 5), (2, 3, 7, 6))
    # The last, an image of no channels, still has each map's constant flag (it once divided by 0).
    empty_shapes = (((0, 4, 3, 3), (0, 3, 5, 6)), ((2, 0, 3, 3), (2, 3, 5, 6)), ((2, 3, 3, 3), (2, 0, 5, 6)))
    bad_inputs = [
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(3, 8, 8)), ValueError, "image must be 4-D"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(3, 3, 8, 8)), ValueError, "same batch size N"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 8, 0)), ValueError, "image must have H > 0"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 8, 8, device="meta")), ValueError,
         "act and image must be on the same device"),
        (lambda: (torch.randn(2, 3, 4, 4), [[1.0]]), TypeError, "image must be a torch.Tensor"),
    ]
    bad_options = [
        ({"normalize_stage": "input"}, ValueError, "normalize_stage must be one of"),
        ({"align_corners": 1}, TypeError, "align_corners must be a bool"),
    ]

    def inputs(self, shape, dtype, device, layout):
        act_shape, image_shape = shape
        act = in_layout(torch.randn(act_shape, device=device).to(dtype), layout)
        return act, in_layout(torch.rand(image_shape, device=device).to(dtype), layout)

    def options(self, act, image):
        return [dict(align_corners=a, normalize_stage=s) for a in (False, True) for s in STAGES]

    def output_shape(self, shape):
        act_shape, image_shape = shape
        return (*act_shape[:2], *image_shape[1:])

    def op_args(self, act, image):
        return [(act, image, align_corners, feature) for align_corners, feature in [(False, False), (True, True)]]

    @every_backend_and_reference
    def test_empty_batch_and_channels(self, device, backend):
        super().test_empty_batch_and_channels(device, backend)
        for shape in self.empty_shapes:
            act, image = self.inputs(shape, torch.float32, device, "contiguous")
            act[:, :1] = 0.5  # a constant map, where there are maps
            _, constant = camfast.score_cam_masks(act, image, backend=backend, return_constant=True)
            _, expected = reference.score_cam_masks(act, image, return_constant=True)
            assert constant.dtype == torch.bool and torch.equal(constant, expected)

    @every_backend_and_reference
    def test_constant_and_special_maps(self, device, backend):
        """Zero, constant, 1x1, NaN and infinite maps; the constant flags agree with the reference."""
        act = torch.randn(2, 6, 4, 5, device=device)
        act[0, 0] = 0.0
        act[0, 1] = 2.5
        act[0, 2, 1, 3] = float("nan")
        act[0, 3, 2, 2] = float("inf")
        act[0, 4, 0, 0] = float("-inf")
        act[1, 5] = float("inf")
        image = torch.rand(2, 3, 11, 9, device=device)
        for align_corners in (False, True):
            for stage in STAGES:
                kwargs = dict(align_corners=align_corners, normalize_stage=stage, return_constant=True)
                out, constant = camfast.score_cam_masks(act, image, backend=backend, **kwargs)
                out_ref, constant_ref = reference.score_cam_masks(act, image, align_corners, stage, return_constant=True)
                torch.testing.assert_close(out, out_ref, equal_nan=True)
                assert torch.equal(constant, constant_ref)
                assert constant[0, :2].all() and not out[0, :2].any()
                assert out[0, 2].isnan().all()
        # A 1x1 map upsamples to a constant map: a zero mask (F.interpolate's rounding noise aside).
        out, constant = camfast.score_cam_masks(torch.randn(2, 3, 1, 1, device=device), image, backend=backend,
                                                return_constant=True)
        assert constant.all() and not out.any()

    @every_backend_and_reference
    def test_output_is_contiguous(self, device, backend):
        act, image = self.inputs(((2, 4, 3, 3), (2, 3, 5, 6)), torch.float32, device, "channels_last")
        assert camfast.score_cam_masks(act, image, backend=backend).is_contiguous()

    @every_backend_and_reference
    def test_downsampled_map_can_become_constant(self, device, backend):
        act = torch.randn(1, 2, 4, 4, device=device)
        out, constant = camfast.score_cam_masks(act, torch.rand(1, 3, 1, 1, device=device), return_constant=True,
                                                backend=backend)
        assert constant.all() and not out.any()

    @every_backend
    def test_compile_returns_the_constant_flags(self, device, backend):
        act = torch.randn(2, 3, 4, 5, device=device)
        image = torch.rand(2, 3, 9, 8, device=device)

        def fn(a, im):
            out, constant = camfast.score_cam_masks(a, im, return_constant=True, backend=backend)
            return out.sum(dim=(2, 3, 4)), constant

        torch._dynamo.reset()
        sums, constant = torch.compile(fn, fullgraph=True)(act, image)
        expected, expected_constant = reference.score_cam_masks(act, image, return_constant=True)
        torch.testing.assert_close(sums, expected.sum(dim=(2, 3, 4)))
        assert torch.equal(constant, expected_constant)

    @every_backend
    def test_ops_guard_empty_maps_when_called_directly(self, device, backend):
        with pytest.raises((RuntimeError, ValueError), match="h > 0 and w > 0"):
            self.compiled_op(backend)(torch.randn(1, 2, 0, 3, device=device), torch.rand(1, 3, 4, 4, device=device),
                                      False, False)
