import pytest
import torch
import torch.nn.functional as F

import camfast
from camfast import reference
from utils import LAYOUTS, assert_matches_reference, compiled_backends, dtypes_for, in_layout

OP = "score_cam_masks"
BACKENDS = compiled_backends()
STAGES = ("upsampled", "feature")


def masks(backend, align_corners=False, stage="upsampled"):
    return lambda act, image: camfast.score_cam_masks(
        act, image, align_corners=align_corners, normalize_stage=stage, backend=backend
    )


def ref(align_corners=False, stage="upsampled"):
    return lambda act, image: reference.score_cam_masks(act, image, align_corners, stage)


def shapes(backend):
    """(act shape, image shape): odd sizes, up- and downsampling, 1x1 maps, one image channel."""
    small = [((2, 3, 5, 7), (2, 3, 9, 13)), ((1, 2, 1, 1), (1, 3, 4, 5)), ((1, 2, 6, 4), (1, 1, 3, 5)),
             ((1, 2, 6, 4), (1, 3, 6, 9))]  # the last keeps H: F.interpolate copies those rows
    # The Triton interpreter runs one program at a time on CPU: keep its cases small.
    return small if backend == "triton" else [((2, 16, 7, 7), (2, 3, 56, 56)), *small]


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


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_matches_reference_on_random_inputs(device, backend):
    for dtype in dtypes_for(device, backend):
        for act_shape, image_shape in shapes(backend):
            for layout in LAYOUTS:
                act = in_layout(torch.randn(act_shape, device=device).to(dtype), layout)
                image = in_layout(torch.rand(image_shape, device=device).to(dtype), layout)
                for align_corners in (False, True):
                    for stage in STAGES:
                        assert_matches_reference(
                            masks(backend, align_corners, stage), ref(align_corners, stage), act, image, backward=False
                        )


@pytest.mark.parametrize("device,backend", [("cpu", "reference"), *BACKENDS])
def test_constant_and_special_maps(device, backend):
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
    out, constant = camfast.score_cam_masks(torch.randn(2, 3, 1, 1, device=device), image, backend=backend, return_constant=True)
    assert constant.all() and not out.any()


@pytest.mark.parametrize("device,backend", [("cpu", "reference"), *BACKENDS])
def test_empty_batch_and_channels(device, backend):
    for n, k in [(0, 4), (2, 0)]:
        act = torch.randn(n, k, 3, 3, device=device)
        out, constant = camfast.score_cam_masks(act, torch.rand(n, 3, 5, 6, device=device), backend=backend, return_constant=True)
        assert out.shape == (n, k, 3, 5, 6) and constant.shape == (n, k) and constant.dtype == torch.bool


@pytest.mark.parametrize("device,backend", [("cpu", "reference"), *BACKENDS])
def test_output_is_contiguous_and_inputs_unchanged(device, backend):
    act = in_layout(torch.randn(2, 4, 3, 3, device=device), "channels_last")
    image = in_layout(torch.rand(2, 3, 5, 6, device=device), "channels_last")
    before = act.clone(), image.clone()
    out = camfast.score_cam_masks(act, image, backend=backend)
    assert out.is_contiguous()
    assert torch.equal(act, before[0]) and torch.equal(image, before[1])


@pytest.mark.parametrize("device,backend", [("cpu", "reference"), *BACKENDS])
def test_downsampled_map_can_become_constant(device, backend):
    act = torch.randn(1, 2, 4, 4, device=device)
    out, constant = camfast.score_cam_masks(act, torch.rand(1, 3, 1, 1, device=device), return_constant=True, backend=backend)
    assert constant.all() and not out.any()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend):
    op = getattr(torch.ops.camfast, OP + ("_triton" if backend == "triton" else ""))
    for layout in ("contiguous", "channels_last"):
        act = in_layout(torch.randn(2, 3, 4, 5, device=device), layout)
        image = in_layout(torch.rand(2, 3, 7, 6, device=device), layout)
        for align_corners, feature in [(False, False), (True, True)]:
            torch.library.opcheck(op, (act, image, align_corners, feature))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_backward_raises(device, backend):
    act = torch.randn(1, 2, 3, 3, device=device, requires_grad=True)
    out = camfast.score_cam_masks(act, torch.rand(1, 3, 5, 5, device=device), backend=backend)
    with pytest.raises(RuntimeError, match="not differentiable"):
        out.sum().backward()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    act = torch.randn(2, 3, 4, 5, device=device)
    image = torch.rand(2, 3, 9, 8, device=device)

    def fn(a, im):
        out, constant = camfast.score_cam_masks(a, im, return_constant=True, backend=backend)
        return out.sum(dim=(2, 3, 4)), constant

    sums, constant = torch.compile(fn, fullgraph=True)(act, image)
    expected, expected_constant = reference.score_cam_masks(act, image, return_constant=True)
    torch.testing.assert_close(sums, expected.sum(dim=(2, 3, 4)))
    assert torch.equal(constant, expected_constant)


BAD_INPUTS = [
    (lambda: (torch.randn(2, 3, 4), torch.rand(2, 3, 8, 8)), {}, ValueError, "act must be 4-D"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(3, 8, 8)), {}, ValueError, "image must be 4-D"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(3, 3, 8, 8)), {}, ValueError, "same batch size N"),
    (lambda: (torch.randn(2, 3, 0, 4), torch.rand(2, 3, 8, 8)), {}, ValueError, "act must have H > 0"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 8, 0)), {}, ValueError, "image must have H > 0"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 8, 8).double()), {}, TypeError, "act and image must have the same dtype"),
    (lambda: (torch.ones(2, 3, 4, 4, dtype=torch.int64), torch.rand(2, 3, 8, 8)), {}, TypeError, "act must be float16"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 8, 8, device="meta")), {}, ValueError, "act and image must be on the same device"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 8, 8)), {"normalize_stage": "input"}, ValueError, "normalize_stage must be one of"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 8, 8)), {"align_corners": 1}, TypeError, "align_corners must be a bool"),
    (lambda: (torch.randn(2, 3, 4, 4), [[1.0]]), {}, TypeError, "image must be a torch.Tensor"),
]


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_ops_guard_empty_maps_when_called_directly(device, backend):
    op = getattr(torch.ops.camfast, OP + ("_triton" if backend == "triton" else ""))
    with pytest.raises((RuntimeError, ValueError), match="h > 0 and w > 0"):
        op(torch.randn(1, 2, 0, 3, device=device), torch.rand(1, 3, 4, 4, device=device), False, False)


@pytest.mark.parametrize("backend", ["reference", *[p.values[1] for p in BACKENDS]])
@pytest.mark.parametrize("make,kwargs,error,message", BAD_INPUTS)
def test_bad_input_same_error_on_every_backend(backend, make, kwargs, error, message):
    with pytest.raises(error, match=message):
        camfast.score_cam_masks(*make(), backend=backend, **kwargs)
