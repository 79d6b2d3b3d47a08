import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import camfast
from camfast import reference
from camfast.reference.weighted_channel_sum import METHODS
from camfast_testing.checks import in_layout
from camfast_testing.op_tester import OpTester, every_backend, every_backend_and_reference


def test_reference_follows_the_explainers_loops():
    """Per image and channel, written out: each method's weights as grad-cam 1.5.7's grad_cam.py,
    xgrad_cam.py, hirescam.py, grad_cam_elementwise.py and layer_cam.py compute them, and the
    ReLU'd sum."""
    act = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    grad = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    for n in range(2):
        a, g = act[n], grad[n]
        expected = {
            "grad-cam": sum(g[k].mean() * a[k] for k in range(4)),
            "xgrad-cam": sum((g[k] * a[k]).sum() / (a[k].sum() + 1e-7) * a[k] for k in range(4)),
            "hires-cam": sum(g[k] * a[k] for k in range(4)),
            "element-wise": sum((g[k] * a[k]).clamp_min(0) for k in range(4)),
            "layer-cam": sum(g[k].clamp_min(0) * a[k] for k in range(4)),
        }
        for method, raw in expected.items():
            out = reference.weighted_channel_sum(act, grad, method)[n]
            torch.testing.assert_close(out, raw.clamp_min(0), rtol=1e-12, atol=1e-12)


class TestWeightedChannelSum(OpTester):
    """Shapes are (act shape [N, K, h, w], T): T classes in a 5-D grad, None for a 4-D grad."""

    op = "weighted_channel_sum"
    # Odd sizes and 1x1 maps, with and without a class axis.
    shapes = (((2, 5, 7, 9), None), ((1, 3, 1, 1), None), ((2, 5, 7, 9), 3), ((1, 3, 1, 1), 2))
    large_shapes = (((3, 70, 14, 14), None), ((2, 300, 7, 7), 3))
    small_shape = ((2, 3, 4, 5), None)
    empty_shapes = (((0, 4, 5, 5), None), ((2, 0, 5, 5), None), ((2, 3, 4, 4), 0), ((0, 3, 4, 4), 2))
    # Every pixel sums K products.
    long_sums = True
    bad_inputs = [
        (lambda: (torch.rand(2, 3, 4, 4), torch.randn(3, 4, 4)), ValueError, "grad must be 4-D or 5-D"),
        (lambda: (torch.rand(2, 3, 4, 4), torch.randn(1, 1, 2, 3, 4, 4)), ValueError, "grad must be 4-D or 5-D"),
        (lambda: (torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 5)), ValueError, "grad must have act's shape"),
        (lambda: (torch.rand(2, 3, 4, 4), torch.randn(2, 1, 3, 4, 4)), ValueError, "grad must have act's shape"),
        (lambda: (torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4).to(torch.int32)), TypeError, "grad must be float16"),
        (lambda: (torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4, device="meta")), ValueError,
         "act and grad must be on the same device"),
        (lambda: (torch.rand(2, 3, 4, 4), [[1.0]]), TypeError, "grad must be a torch.Tensor"),
    ]
    bad_options = [
        ({"method": "gradcam"}, ValueError, "method must be one of"),
        ({"method": None}, ValueError, "method must be one of"),
        ({"eps": -1e-7}, ValueError, r"eps must lie in \[0, inf\]"),
        ({"eps": float("nan")}, ValueError, r"eps must lie in \[0, inf\]"),
        ({"eps": torch.tensor(1e-7)}, TypeError, "eps must be a real number"),
    ]

    def inputs(self, shape, dtype, device, layout):
        act_shape, classes = shape
        # Signed activations, mostly positive (as after a ReLU or a batch norm), so that every
        # method's map differs and sum A stays away from -eps; gradients of the size real layers
        # get (1e-3), so that S g stays far from -2, where Grad-CAM++'s alpha 1 / (2 + S g) is
        # singular and any two evaluation orders disagree (with unit gradients a few hundred
        # random values land near it; with 0.01 on a 14 x 14 map, S ~ 100, still some do).
        act = in_layout((torch.randn(act_shape, device=device) + 0.5).to(dtype), layout)
        n, k, h, w = act_shape
        grad = (1e-3 * torch.randn((1 if classes is None else classes) * n, k, h, w, device=device)).to(dtype)
        grad = in_layout(grad, layout)
        return act, grad if classes is None else grad.view(classes, *act_shape)

    def options(self, act, grad):
        return [dict(method=m) for m in METHODS] + [dict(method="xgrad-cam", eps=1e-8)]

    def output_shape(self, shape):
        act_shape, classes = shape
        return (*(() if classes is None else (classes,)), act_shape[0], *act_shape[2:])

    def op_args(self, act, grad):
        classes = torch.stack([grad, -2 * grad])
        return [(act, grad, method, 1e-7) for method in METHODS] + [(act, classes, "layer-cam", 1e-8)]

    @every_backend_and_reference
    def test_classes_equal_one_call_per_class(self, device, backend):
        # 6 classes: the CPU's float32 maps take 4 classes at a time, then one; 5 x 3 pixels: 8, then 7
        for dtype in (torch.float32, torch.float64):
            act, grad = self.inputs(((2, 6, 5, 3), 6), dtype, device, "contiguous")
            for method in METHODS:
                both = camfast.weighted_channel_sum(act, grad, method, backend=backend)
                for t in range(6):
                    one = camfast.weighted_channel_sum(act, grad[t], method, backend=backend)
                    torch.testing.assert_close(both[t], one, rtol=0, atol=0)

    @every_backend_and_reference
    def test_mixed_layouts(self, device, backend):
        """act and grad in different layouts, and a class axis that is not the outermost stride."""
        act = torch.randn(2, 6, 5, 3, device=device, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(2, 3, 6, 5, 3, device=device, dtype=torch.float64).transpose(0, 1)
        for method in METHODS:
            out = camfast.weighted_channel_sum(act, grad, method, backend=backend)
            expected = reference.weighted_channel_sum(act.contiguous(), grad.contiguous(), method)
            assert out.is_contiguous() and out.shape == (3, 2, 5, 3)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)

    @every_backend_and_reference
    def test_channel_strides_differ(self, device, backend):
        """act and grad with rows of contiguous pixels but other channel strides (every other channel
        of a larger tensor), float32: the CPU's short-row sums read each with its own strides."""
        act, grad = self.inputs(((2, 9, 5, 5), None), torch.float32, device, "contiguous")
        wide_act, wide_grad = self.inputs(((2, 18, 5, 5), None), torch.float32, device, "contiguous")
        for act, grad in ((wide_act[:, ::2], grad), (act, wide_grad[:, 1::2])):
            assert act.stride(1) != grad.stride(1) and act.stride(3) == grad.stride(3) == 1
            for options in self.options(act, grad):
                self.assert_matches_reference(backend, act, grad, **options)

    @every_backend_and_reference
    def test_dead_channels_zero_gradients_and_nan(self, device, backend):
        """All-zero maps (XGrad-CAM: 0 / eps), zero gradients (Grad-CAM++: 0 / 0 counts as 0), NaN propagates."""
        act = torch.rand(2, 5, 4, 3, device=device)
        grad = torch.randn(2, 5, 4, 3, device=device)
        act[0, 1] = 0.0
        grad[0, 2] = 0.0
        grad[1, :, 0, 0] = 0.0
        act[1, 3, 2, 1] = float("nan")
        for method in METHODS:
            out = camfast.weighted_channel_sum(act, grad, method, backend=backend)
            expected = reference.weighted_channel_sum(act, grad, method)
            torch.testing.assert_close(out, expected, equal_nan=True, rtol=1e-5, atol=1e-6)
            assert out[0].isfinite().all() and out[1].isnan().any()
        # eps = 0: the dead channel's weight is 0 / 0, as in eager PyTorch.
        assert camfast.weighted_channel_sum(act, grad, "xgrad-cam", eps=0.0, backend=backend)[0].isnan().all()

    @every_backend_and_reference
    def test_every_float16_value(self, device, backend):
        """Each of the 65536 float16 values, subnormals, infinities and NaN included, read exactly:
        a map of one channel is ReLU(g A) with g = 1 and g = -1."""
        values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
        act = values.to(device).view(1, 1, 256, 256)
        for sign in (1.0, -1.0):
            out = camfast.weighted_channel_sum(act, torch.full_like(act, sign), "hires-cam", backend=backend)
            torch.testing.assert_close(out, (sign * act[:, 0]).relu(), rtol=0, atol=0, equal_nan=True)

    @every_backend
    def test_ops_check_their_arguments_when_called_directly(self, device, backend):
        """The arguments other than tensors' shapes, dtypes and devices (tests/test_entry_points.py)."""
        op = self.compiled_op(backend)
        act, grad = torch.rand(2, 3, 4, 4, device=device), torch.randn(2, 3, 4, 4, device=device)
        cases = [
            ((act, grad, "gradcam", 1e-7), "method must be one of"),
            ((act[:, :, :0], grad[:, :, :0], "grad-cam", 1e-7), "h > 0 and w > 0"),
            ((act, grad, "xgrad-cam", -1.0), r"eps must lie in \[0, inf\]"),
        ]
        for args, message in cases:
            with pytest.raises((RuntimeError, ValueError), match=message):
                op(*args)


def test_baseline_build_on_cpus_without_avx2():
    """The CPU kernel runs its AVX2 build where the CPU has AVX2: this machine's tests above then
    never run the baseline build, which older CPUs get. CAMFAST_CPU_CAPABILITY=default forces it
    for this op's CPU tests, in a fresh process (the choice is made once per process)."""
    if not camfast._extension.has_cpp("cpu"):
        pytest.skip("camfast._C was built without CPU kernels")
    env = {**os.environ, "CAMFAST_CPU_CAPABILITY": "default"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "TestWeightedChannelSum and cpu-cpp"],
                         capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
