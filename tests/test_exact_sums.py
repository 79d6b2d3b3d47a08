"""Exact sums: every reduction of every op, on every backend, in float32, float16 and bfloat16,
stays within twice eager PyTorch's own error against float64, from 1 x 1 maps to 8192 x 8192 and
on a CPU tensor of more than 2^31 elements.

Eager's error is the reference's (camfast.reference, the plain PyTorch specification) in the same
dtype. torch.sum and torch.mean sum pairwise, so eager stays near one rounding at every size,
while a float32 running sum drifts with the number of terms: TAP's mean over a 4096 x 4096 map
was off by 240 float32 ulps before the op's sums moved to double (torch.softmax does not sum
pairwise: there eager's own error grows, and the bound with it). The reference backend is that
yardstick itself and has no row here; test_check_rejects_a_running_float32_sum shows the check
catches the drift.

Error of a result: its largest deviation from float64 over the positions where float64 is
finite, divided by the largest finite |float64| (a normwise error: elementwise relative errors of
a softmax's underflowing tail are noise in every implementation). A result that overflows or
turns NaN where float64 does not has an infinite error. The bound is the one the op tests
apply to float16 and bfloat16 (checks.LOW_PRECISION_FACTOR and LOW_PRECISION_ULPS):
    error(op) <= 2 error(eager) + 4 eps(dtype),
the floor being four units of roundoff of the result's magnitude: the op and eager compute the
elementwise steps around the sums (an exp within 2 ulps, a reciprocal, a mean rounded to the
input dtype) differently, a few roundings apart, and where eager lands on or next to the exact
value (a 1 x 1 map, a handful of terms) those roundings are all the two can differ by. The drift
this test exists for is larger: 12 float32 ulps for TAP at 512 x 512, 16 for GGAM's channel sums
over 8192 channels, hundreds at 4096 x 4096.

Outputs are compared through autograd, so every backward reduction (ADL's and GGAM's channel
dot products, the softmax's sum of g p, GGAM's grad_s, ABN's grad_m) is checked with its forward.
Under the Triton interpreter (no GPU) the sizes are small, plus one long row, and bfloat16 is
left out: the interpreter rounds float32 to bfloat16 toward zero where GPUs round to nearest,
which alone puts its results up to two ulps from eager's; float16 runs the same accumulation
code. The largest cases are marked `large` and skip themselves, with the reason, where free
memory is short (8192 x 8192 maps need about 6 GiB, the 2^31-element tensor 11 GiB).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import camfast
from camfast import reference
from camfast_testing import checks
from camfast_testing.op_tester import BACKENDS, all_op_testers

TESTERS = {t.op: t for t in all_op_testers()}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Sums over the H*W pixels of a map, [N, C, H, W]: 1 x 1 to 1024 x 1024 here, larger in
# test_large_maps. Enough maps per call that the largest error is not one lucky draw.
MAPS = ((3, 5, 1, 1), (4, 8, 7, 9), (2, 4, 128, 128), (1, 2, 512, 512))
MAPS_INTERPRETED = ((3, 5, 1, 1), (4, 8, 7, 9), (1, 2, 64, 128))
# Sums over the C channels of each pixel.
CHANNELS = ((4, 1, 7, 9), (4, 3, 7, 9), (2, 512, 14, 14), (2, 8192, 4, 4))
CHANNELS_INTERPRETED = ((4, 1, 7, 9), (4, 3, 7, 9), (1, 8192, 2, 2))
# Score-CAM: (act, image) shapes; its min, max and normalisation are the reductions.
UPSAMPLES = (((2, 8, 7, 7), (2, 3, 64, 64)), ((1, 4, 64, 64), (1, 1, 512, 512)))
UPSAMPLES_INTERPRETED = (((2, 8, 7, 7), (2, 3, 32, 32)),)

# (op, options, which shapes): every reduction of every op, forward and backward.
REDUCTIONS = [
    ("thresholded_avg_pool2d", dict(tau=0.1), "maps"),
    ("spatial_softmax2d", dict(temperature=1.0), "maps"),
    ("spatial_soft_argmax2d", dict(temperature=0.5, normalized_coordinates=True), "maps"),
    ("channel_spatial_attention", dict(spatial="softmax"), "maps"),
    ("channel_spatial_attention", dict(spatial="softmax"), "channels"),
    ("channel_spatial_attention", dict(spatial="sigmoid"), "channels"),
    ("adl", dict(use_drop=False), "channels"),
    ("adl", dict(use_drop=True), "channels"),
    ("attention_branch_mix", {}, "channels"),
    ("weighted_channel_sum", dict(method="grad-cam"), "maps"),
    ("weighted_channel_sum", dict(method="xgrad-cam"), "maps"),
    ("weighted_channel_sum", dict(method="grad-cam++"), "maps"),
    ("weighted_channel_sum", dict(method="grad-cam"), "channels"),
    ("weighted_channel_sum", dict(method="layer-cam"), "channels"),
    ("score_cam_masks", dict(normalize_stage="upsampled"), "upsamples"),
    ("score_cam_masks", dict(normalize_stage="feature"), "upsamples"),
]


def interpreted(backend: str) -> bool:
    return backend == "triton" and INTERPRETED


def shapes_of(op: str, family: str, backend: str) -> tuple:
    small = interpreted(backend)
    shapes = {
        "maps": MAPS_INTERPRETED if small else MAPS,
        "channels": CHANNELS_INTERPRETED if small else CHANNELS,
        "upsamples": UPSAMPLES_INTERPRETED if small else UPSAMPLES,
    }[family]
    # The gradient CAM op takes ([N, K, h, w], classes): one class axis of 2 where it is cheap.
    return tuple((s, 2 if s[1] < 64 else None) for s in shapes) if op == "weighted_channel_sum" else shapes


def error(actual: torch.Tensor | None, exact: torch.Tensor | None) -> float:
    """Normwise error of actual against float64 (see the module docstring)."""
    if exact is None:
        assert actual is None
        return 0.0
    exact = exact.double()
    finite = exact.isfinite()
    if not finite.all():  # NaN and infinities must sit where float64 has the same
        if not torch.equal(actual[~finite].double().nan_to_num(), exact[~finite].nan_to_num()):
            return float("inf")
        actual, exact = actual[finite], exact[finite]
    if exact.numel() == 0:
        return 0.0
    deviation = (actual.double() - exact).abs().max().item()  # NaN or inf where actual is not finite
    if not math.isfinite(deviation):
        return float("inf")
    scale = exact.abs().max().item()
    return deviation / scale if scale > 0 else deviation


def bound(eager_error: float, dtype: torch.dtype) -> float:
    """The largest error allowed where eager errs by eager_error (see the module docstring)."""
    return checks.LOW_PRECISION_FACTOR * eager_error + checks.LOW_PRECISION_ULPS * torch.finfo(dtype).eps


def assert_within_eager(op: str, backend: str, inputs: tuple, options: dict, dtype: torch.dtype,
                        backward: bool = True) -> None:
    """The op's output (and gradients, with backward) against float64, bounded by eager's in the same dtype."""
    tester = TESTERS[op]
    probe = tester.ref(*inputs, **options)
    grad_out = torch.randn(probe.shape, dtype=torch.float64, device=probe.device)
    back = backward and tester.differentiable

    def run(fn, args):
        return checks.outputs_and_grads(lambda *t: fn(*t, **options), args, grad_out, back)

    ours = run(lambda *t, **o: tester.call(backend, *t, **o), checks.leaves(inputs))
    eager = run(tester.ref, checks.leaves(inputs))
    exact = run(tester.ref, checks.leaves(inputs, torch.float64))
    for i, (a, e, x) in enumerate(zip(ours, eager, exact, strict=True)):
        name = "output" if i == 0 else f"grad {i - 1}"
        ours_error, eager_error = error(a, x), error(e, x)
        assert ours_error <= bound(eager_error, dtype), (
            f"{op} {options} {dtype} {name} {[tuple(t.shape) for t in inputs]} strides {[t.stride() for t in inputs]}: "
            f"error {ours_error:.3g} against float64, eager's {eager_error:.3g}")


def cases():
    for device, backend in (p.values for p in BACKENDS):
        for op, options, family in REDUCTIONS:
            for dtype in DTYPES:
                marks = [pytest.mark.triton] if backend == "triton" else []
                if interpreted(backend) and dtype == torch.bfloat16:
                    continue  # see the module docstring
                yield pytest.param(device, backend, op, options, family, dtype, marks=marks,
                                   id=f"{device}-{backend}-{op}-{'-'.join(map(str, options.values()))}-{family}-"
                                      f"{str(dtype).removeprefix('torch.')}")


@pytest.mark.parametrize("device,backend,op,options,family,dtype", list(cases()))
def test_error_within_twice_eager(device, backend, op, options, family, dtype):
    tester = TESTERS[op]
    for shape in shapes_of(op, family, backend):
        # channels_last takes other loops (vectorised over C); checked on the smaller shapes.
        for layout in ("contiguous", "channels_last")[:1 if shape_numel(shape) > channels_last_up_to(backend) else 2]:
            inputs = tester.inputs(shape, dtype, device, layout)
            assert_within_eager(op, backend, inputs, options, dtype)


def channels_last_up_to(backend: str) -> int:
    return 2**12 if interpreted(backend) else 2**17


def shape_numel(shape) -> int:
    first = shape[0]
    return math.prod(first) if isinstance(first, tuple) else math.prod(shape)


TRITON_ON_CPU = [p for p in BACKENDS if p.values == ("cpu", "triton")]


@pytest.mark.parametrize("device,backend", TRITON_ON_CPU)
def test_triton_total_across_a_thousand_tiles(device, backend):
    """The interpreter affords only small maps in the table; one long row (1024 tiles of 1024
    values) checks the Triton running total across tiles, where a float32 total was off by 65x
    eager's error (4.3e-7 against 6.7e-9)."""
    tester = TESTERS["thresholded_avg_pool2d"]
    inputs = tester.inputs((1, 1, 1024, 1024), torch.float32, device, "contiguous")
    assert_within_eager("thresholded_avg_pool2d", backend, inputs, dict(tau=0.1), torch.float32, backward=False)


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 where there is none: the large tests then skip)."""
    try:
        with open("/proc/meminfo") as info:
            return next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 0


def needs_memory(gib: float) -> None:
    have = available_bytes() / 2**30
    if have < gib:
        pytest.skip(f"needs {gib:.0f} GiB of free memory, {have:.1f} GiB available")


# The sums over the largest maps: float32 for every op's reductions over the map (Grad-CAM++
# has all three of the gradient CAM op's), and every dtype for TAP, whose float32 running sum was
# off by 7.7e-3 here. The sums are one template over the input dtype (double accumulators; only
# the loads differ), and every dtype of every op runs at all the smaller sizes above. Backward
# only where it sums over the map (the others' backward is elementwise, checked above).
LARGE_MAP = (1, 1, 8192, 8192)
LARGE_REDUCTIONS = [
    *[("thresholded_avg_pool2d", dict(tau=0.1), dtype) for dtype in DTYPES],
    ("spatial_softmax2d", dict(temperature=1.0), torch.float32),
    ("spatial_soft_argmax2d", dict(temperature=0.5, normalized_coordinates=True), torch.float32),
    ("channel_spatial_attention", dict(spatial="softmax"), torch.float32),
    ("weighted_channel_sum", dict(method="grad-cam++"), torch.float32),
]
BACKWARD_SUMS_OVER_MAPS = ("spatial_softmax2d", "channel_spatial_attention")


@pytest.mark.large
@pytest.mark.parametrize("op,options,dtype", [
    pytest.param(op, options, dtype, id=f"{op}-{'-'.join(map(str, options.values()))}-{str(dtype).removeprefix('torch.')}")
    for op, options, dtype in LARGE_REDUCTIONS])
def test_large_maps(op, options, dtype):
    needs_memory(6)
    shape = (LARGE_MAP, None) if op == "weighted_channel_sum" else LARGE_MAP
    inputs = TESTERS[op].inputs(shape, dtype, "cpu", "contiguous")
    assert_within_eager(op, "cpp", inputs, options, dtype, backward=op in BACKWARD_SUMS_OVER_MAPS)


# 2 maps of 32768 x 32776: 2^31 + 491520 float32 values (8.6 GB), so every index and count past
# 2^31 is exercised, while each map's count (2^30) still fits the op's int32 count.
PAST_2_31 = (1, 2, 32768, 32776)


@pytest.mark.large
def test_tensor_past_2_31_elements():
    """TAP's sums over a tensor of more than 2^31 elements, against float64 and eager.

    Values in [0.5, 1) with tau = 0 keep every value, so eager's TAP is x.sum((2, 3)) / (H * W)
    (the reference's torch.where would copy the 8.6 GB tensor). float64 sums are taken in chunks.
    """
    needs_memory(8.6 + 2)
    x = torch.empty(PAST_2_31).uniform_(0.5, 1.0)
    assert x.numel() > 2**31
    out = camfast.thresholded_avg_pool2d(x, 0.0, backend="cpp")
    pixels = x.shape[2] * x.shape[3]
    eager = x.sum((2, 3)) / pixels
    rows = x.view(x.shape[1], pixels)
    exact = torch.stack([sum(chunk.double().sum() for chunk in row.split(2**26)) for row in rows]).view(1, -1) / pixels
    ours_error, eager_error = error(out, exact), error(eager, exact)
    assert ours_error <= bound(eager_error, torch.float32), (ours_error, eager_error)


def test_check_rejects_a_running_float32_sum():
    """The bound has teeth: TAP with a float32 running sum (NumPy's add.accumulate runs one,
    term by term) fails it at 512 x 512, where the op passes in test_error_within_twice_eager."""
    x = TESTERS["thresholded_avg_pool2d"].inputs((1, 2, 512, 512), torch.float32, "cpu", "contiguous")[0]
    rows = x.flatten(2)
    kept = torch.where(rows > rows.amax(-1, keepdim=True) * 0.1, rows, 0.0)
    running = torch.from_numpy(np.add.accumulate(kept.numpy(), axis=-1)[..., -1]) / (kept > 0).sum(-1)
    exact = reference.thresholded_avg_pool2d(x.double(), 0.1)
    eager = reference.thresholded_avg_pool2d(x, 0.1)
    assert running.dtype == torch.float32
    assert error(running, exact) > bound(error(eager, exact), torch.float32)
