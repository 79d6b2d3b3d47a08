import pytest
import torch

import camfast
from camfast import reference
from camfast_testing.checks import LAYOUTS, in_layout
from camfast_testing.op_tester import LayerOpTester, every_backend

SPATIAL = ("sigmoid", "softmax")
S_LAYOUTS = ("contiguous", "transposed", "sliced", "nc11")


def weights_in_layout(s, layout):
    """The values of s [N, C] with other strides, or as the [N, C, 1, 1] a 1x1 conv gives."""
    if layout == "contiguous":
        return s.contiguous()
    if layout == "transposed":
        return s.t().contiguous().t()
    if layout == "sliced":
        wide = torch.empty(s.shape[0], 2 * s.shape[1], dtype=s.dtype, device=s.device)
        wide[:, ::2] = s
        return wide[:, ::2]
    if layout == "nc11":
        return s[:, :, None, None].contiguous(memory_format=torch.channels_last)
    raise ValueError(layout)


def channel_softmax(n, c, device, dtype=torch.float32):
    return torch.softmax(2 * torch.randn(n, c, device=device), dim=1).to(dtype)


class TestChannelSpatialAttention(LayerOpTester):
    op = "channel_spatial_attention"
    long_sums = True
    bad_inputs = [
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 4)), ValueError, r"s must have shape \[N, C\] of a = \(2, 3\)"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(3, 3)), ValueError, r"s must have shape \[N, C\] of a"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 2, 2)), ValueError, "s must be 2-D"),
        (lambda: (torch.randn(2, 3, 4, 4), [[0.5] * 3] * 2), TypeError, "s must be a torch.Tensor"),
    ]
    bad_options = [({"spatial": "tanh"}, ValueError, "spatial must be one of")]

    def inputs(self, shape, dtype, device, layout):
        a = in_layout(torch.randn(shape, device=device).to(dtype), layout)
        s = channel_softmax(*shape[:2], device, dtype)
        return a, weights_in_layout(s, S_LAYOUTS[LAYOUTS.index(layout) % len(S_LAYOUTS)])

    def options(self, a, s):
        return [dict(spatial=spatial) for spatial in SPATIAL]

    def op_args(self, a, s):
        return [(a, s, softmax) for softmax in (False, True)]

    @every_backend
    @pytest.mark.parametrize("spatial", SPATIAL)
    def test_every_weight_layout(self, device, backend, spatial):
        a = torch.randn(2, 6, 3, 4, device=device)
        for s_layout in S_LAYOUTS:
            s = weights_in_layout(channel_softmax(2, 6, device), s_layout)
            self.assert_matches_reference(backend, a, s, long_sums=True, spatial=spatial)

    @every_backend
    @pytest.mark.parametrize("spatial", SPATIAL)
    def test_edge_values(self, device, backend, spatial):
        """NaN, +-inf, saturated sigmoids and zero weights behave as the reference's autograd."""
        a = torch.randn(4, 3, 2, 3, device=device)
        a[0, 1, 0, 1] = float("nan")
        a[1, 0, 1, 2] = float("inf")
        a[2, 2, 0, 0] = float("-inf")
        a[3] *= 100.0  # sigmoid saturates to exactly 0 and 1
        s = channel_softmax(4, 3, device)
        s[3, 0] = 0.0
        for layout in LAYOUTS:
            self.assert_matches_reference(backend, in_layout(a, layout), s, spatial=spatial)
        out = self.call(backend, a, s, spatial=spatial)
        if spatial == "softmax":  # one NaN or +inf makes the whole softmax of that sample NaN
            assert out[0].isnan().all() and out[1].isnan().all() and not out[3].isnan().any()
        else:  # a NaN poisons its pixel only
            assert out[0, :, 0, 1].isnan().all() and out[0].isnan().sum() == 3

    @every_backend
    def test_softmax_attention_sums_to_one(self, device, backend):
        a = torch.randn(2, 4, 5, 6, device=device, dtype=torch.float64)
        ones = torch.ones(2, 4, 5, 6, device=device, dtype=torch.float64)
        s = channel_softmax(2, 4, device, torch.float64)
        # t is out / a; with a = 1 the output is t itself, and sum_hw t = 1 per channel.
        t = self.call(backend, ones, s, spatial="softmax")
        torch.testing.assert_close(t.sum(dim=(2, 3)), torch.ones(2, 4, dtype=torch.float64, device=device))
        assert self.call(backend, a, s, spatial="softmax").shape == a.shape

    @pytest.mark.parametrize("spatial", SPATIAL)
    def test_many_pixel_blocks_per_sample(self, spatial):
        """2048 float64 channels: the CPU kernels split each 12x13 map into several pixel blocks."""
        a = torch.randn(2, 2048, 12, 13, dtype=torch.float64)
        s = channel_softmax(2, 2048, "cpu", torch.float64)
        for layout in ("contiguous", "channels_last"):
            self.assert_matches_reference("cpp", in_layout(a, layout), s, spatial=spatial)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_module_is_the_authors_spatial_se_module(spatial):
    module = camfast.nn.ChannelSpatialAttention(64, reduction=16, spatial=spatial)
    a = torch.rand(2, 64, 5, 5, requires_grad=True)
    out, attention = module(a, return_attention=True)
    s = torch.softmax(module.fc2(torch.relu(module.fc1(a.mean(dim=(2, 3), keepdim=True)))), dim=1)
    torch.testing.assert_close(attention, s.flatten(1))
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(module(a), out)
    torch.testing.assert_close(out, reference.channel_spatial_attention(a, s, spatial))
    assert module.fc1.out_channels == 4 and module.fc1.bias is not None
    out.sum().backward()
    assert module.fc1.weight.grad is not None  # s is not detached
    assert f"spatial='{spatial}'" in repr(module)


def test_ggam_loss_is_the_authors_kl_summed():
    s = torch.softmax(torch.randn(3, 8), dim=1).requires_grad_()
    grad_weights = torch.randn(3, 8, requires_grad=True)
    q = torch.softmax(grad_weights.detach(), dim=1)
    loss = camfast.ggam_loss(s, grad_weights)
    torch.testing.assert_close(loss, (s * (s.log() - q.log())).sum())
    loss.backward()
    torch.testing.assert_close(s.grad, s.detach().log() + 1 - q.log())  # the authors' kl_div target gradient
    assert grad_weights.grad is None  # detached, as in the authors' code
    # [N, C, 1, 1] is accepted, as the module's convs produce it.
    torch.testing.assert_close(camfast.ggam_loss(s[:, :, None, None], grad_weights), loss)


def test_ggam_loss_paper_form_options():
    s = torch.softmax(torch.randn(3, 8), dim=1)
    grad_weights = torch.randn(3, 8)
    q = torch.sigmoid(grad_weights)
    forward_kl = (s * (s.log() - q.log())).sum()
    torch.testing.assert_close(camfast.ggam_loss(s, grad_weights, sigmoid=True), forward_kl)
    both = forward_kl + (q * (q.log() - s.log())).sum()
    torch.testing.assert_close(camfast.ggam_loss(s, grad_weights, symmetric=True, sigmoid=True), both)
    with pytest.raises(ValueError, match=r"grad_weights must have shape \[N, C\] of s"):
        camfast.ggam_loss(s, grad_weights[:, :4])


def test_training_step_as_in_the_module_docstring():
    """The authors' step: Grad-CAM weights of the top logits w.r.t. the output, then CE + KL."""
    module = camfast.nn.ChannelSpatialAttention(32, reduction=8)
    head = torch.nn.Linear(32, 5)
    out, s = module(torch.rand(4, 32, 6, 6), return_attention=True)
    logits = head(out.amax(dim=(2, 3)))
    w = torch.autograd.grad(logits.max(1).values.sum(), out, retain_graph=True)[0].mean((2, 3))
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(4)) + camfast.ggam_loss(s, w)
    loss.backward()
    assert torch.isfinite(module.fc1.weight.grad).all() and module.fc1.weight.grad.abs().sum() > 0
