import torch

import camfast
from camfast_testing.checks import LAYOUTS, in_layout
from camfast_testing.op_tester import LayerOpTester, every_backend


class TestAttentionBranchMix(LayerOpTester):
    op = "attention_branch_mix"
    long_sums = True
    bad_inputs = [
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)), ValueError,
         r"m must have shape \[N, 1, H, W\] of g = \(2, 1, 4, 4\)"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(1, 1, 4, 4)), ValueError, r"m must have shape \[N, 1, H, W\] of g"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 1, 4, 5)), ValueError, r"m must have shape \[N, 1, H, W\] of g"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 4, 4)), ValueError, "m must be 4-D"),
        (lambda: (torch.randn(2, 3, 4, 4), 0.5), TypeError, "m must be a torch.Tensor"),
    ]

    def inputs(self, shape, dtype, device, layout):
        g = in_layout(torch.randn(shape, device=device).to(dtype), layout)
        m = torch.rand(shape[0], 1, *shape[2:], device=device).to(dtype)
        # m's strides vary independently of g's.
        return g, in_layout(m, LAYOUTS[(LAYOUTS.index(layout) + 1) % len(LAYOUTS)])

    def op_args(self, g, m):
        return [(g, m)]

    @every_backend
    def test_edge_values(self, device, backend):
        """NaN and +-inf in g or m, and m = -1 (which zeroes g), behave as the reference's autograd."""
        g = torch.randn(2, 3, 2, 3, device=device)
        m = torch.rand(2, 1, 2, 3, device=device)
        g[0, 1, 0, 1] = float("nan")
        g[1, 0, 1, 2] = float("inf")
        m[0, 0, 1, 1] = float("-inf")
        m[1, 0, 0, 0] = -1.0
        m[1, 0, 1, 2] = -1.0  # (1 + m) * inf: NaN, as g * m + g
        for layout in LAYOUTS:
            self.assert_matches_reference(backend, in_layout(g, layout), m)

    def test_many_pixel_blocks_per_sample(self):
        """2048 float64 channels: the CPU kernels split each 12x13 map into several pixel blocks."""
        g = torch.randn(2, 2048, 12, 13, dtype=torch.float64)
        m = torch.rand(2, 1, 12, 13, dtype=torch.float64)
        for layout in ("contiguous", "channels_last"):
            self.assert_matches_reference("cpp", in_layout(g, layout), m)


def test_attention_branch_module_is_the_authors_branch():
    torch.manual_seed(0)
    branch = camfast.nn.AttentionBranch(16, num_classes=10).eval()
    x = torch.randn(2, 16, 7, 7, requires_grad=True)
    out, logits, attention = branch(x, return_attention=True)
    h = torch.relu(branch.bn_att2(branch.att_conv(branch.bn_att(x))))
    m = torch.sigmoid(branch.bn_att3(branch.att_conv3(h)))
    torch.testing.assert_close(attention, m)
    torch.testing.assert_close(logits, branch.att_conv2(h).mean(dim=(2, 3)))
    torch.testing.assert_close(out, x * m + x)
    assert out.shape == x.shape and logits.shape == (2, 10) and m.shape == (2, 1, 7, 7)
    # The perception loss reaches the attention branch: m is not detached.
    out.sum().backward()
    assert branch.att_conv3.weight.grad is not None and branch.att_conv3.weight.grad.abs().sum() > 0


def test_attention_branch_with_a_body():
    body = torch.nn.Conv2d(8, 12, kernel_size=3, padding=1)
    branch = camfast.nn.AttentionBranch(12, num_classes=5, body=body)
    out, logits = branch(torch.randn(2, 8, 6, 6))
    assert out.shape == (2, 8, 6, 6) and logits.shape == (2, 5)
