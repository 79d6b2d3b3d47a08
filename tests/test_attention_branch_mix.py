import pytest
import torch

import camfast
from camfast import reference
from utils import LAYOUTS, assert_compiles_like_reference, assert_matches_reference, compiled_backends, dtypes_for, in_layout

OP = "attention_branch_mix"
BACKENDS = compiled_backends()


def mix(backend):
    return lambda g, m: camfast.attention_branch_mix(g, m, backend=backend)


def ref(g, m):
    return reference.attention_branch_mix(g, m)


def shapes(backend):
    # The Triton interpreter runs one program at a time on CPU: keep its cases small.
    return [(2, 5, 7, 9), (1, 3, 1, 1)] if backend == "triton" else [(3, 70, 14, 14), (2, 5, 7, 9), (1, 3, 1, 1)]


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_matches_reference_on_random_inputs(device, backend):
    for dtype in dtypes_for(device, backend):
        for shape in shapes(backend):
            for i, layout in enumerate(LAYOUTS):
                g = in_layout(torch.randn(shape, device=device).to(dtype), layout)
                m = torch.rand(shape[0], 1, *shape[2:], device=device).to(dtype)
                m = in_layout(m, LAYOUTS[(i + 1) % len(LAYOUTS)])  # m's strides vary independently of g's
                assert_matches_reference(mix(backend), ref, g, m, long_sums=True)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_edge_values(device, backend):
    """NaN and +-inf in g or m, and m = -1 (which zeroes g), behave as the reference's autograd."""
    g = torch.randn(2, 3, 2, 3, device=device)
    m = torch.rand(2, 1, 2, 3, device=device)
    g[0, 1, 0, 1] = float("nan")
    g[1, 0, 1, 2] = float("inf")
    m[0, 0, 1, 1] = float("-inf")
    m[1, 0, 0, 0] = -1.0
    m[1, 0, 1, 2] = -1.0  # (1 + m) * inf: NaN, as g * m + g
    for layout in LAYOUTS:
        assert_matches_reference(mix(backend), ref, in_layout(g, layout), m)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_empty_batch_and_channels(device, backend):
    for shape in [(0, 4, 5, 5), (2, 0, 5, 5)]:
        g = torch.randn(shape, device=device, requires_grad=True)
        m = torch.rand(shape[0], 1, 5, 5, device=device, requires_grad=True)
        out = camfast.attention_branch_mix(g, m, backend=backend)
        assert out.shape == shape
        out.sum().backward()
        assert g.grad.shape == g.shape and m.grad.shape == m.shape
        assert not m.grad.any()  # no channels: the sum over C is 0


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gradcheck(device, backend):
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device)
    m = torch.rand(2, 1, 4, 5, dtype=torch.float64, device=device)
    assert torch.autograd.gradcheck(mix(backend), (g.clone().requires_grad_(), m.clone().requires_grad_()))
    g_cl = g.contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(mix(backend), (g_cl, m.clone().requires_grad_()))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend):
    op = getattr(torch.ops.camfast, OP + ("_triton" if backend == "triton" else ""))
    for layout in ("contiguous", "channels_last"):
        g = in_layout(torch.randn(2, 3, 4, 5, device=device), layout).requires_grad_()
        m = torch.rand(2, 1, 4, 5, device=device, requires_grad=True)
        torch.library.opcheck(op, (g, m))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    g = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    m = torch.rand(2, 1, 4, 5, device=device, requires_grad=True)
    mix = lambda x, a: camfast.attention_branch_mix(x, a, backend=backend)  # noqa: E731
    assert_compiles_like_reference(mix, reference.attention_branch_mix, g, m)


BAD_INPUTS = [
    (lambda: (torch.randn(2, 3, 4), torch.rand(2, 1, 4, 4)), ValueError, "g must be 4-D"),
    (lambda: (torch.ones(2, 3, 4, 4, dtype=torch.int64), torch.rand(2, 1, 4, 4)), TypeError, "g must be float16"),
    (lambda: (torch.randn(2, 3, 0, 4), torch.rand(2, 1, 0, 4)), ValueError, "H > 0 and W > 0"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)), ValueError, r"m must have shape \[N, 1, H, W\] of g = \(2, 1, 4, 4\)"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(1, 1, 4, 4)), ValueError, r"m must have shape \[N, 1, H, W\] of g"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 1, 4, 5)), ValueError, r"m must have shape \[N, 1, H, W\] of g"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 4, 4)), ValueError, "m must be 4-D"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 1, 4, 4, dtype=torch.float64)), TypeError, "g and m must have the same dtype"),
    (lambda: (torch.randn(2, 3, 4, 4), 0.5), TypeError, "m must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", ["reference", *[p.values[1] for p in BACKENDS]])
@pytest.mark.parametrize("make,error,message", BAD_INPUTS)
def test_bad_input_same_error_on_every_backend(backend, make, error, message):
    with pytest.raises(error, match=message):
        camfast.attention_branch_mix(*make(), backend=backend)


@pytest.mark.parametrize("backend", ["reference", *[p.values[1] for p in BACKENDS]])
def test_inputs_are_not_modified(backend):
    g, m = torch.randn(2, 3, 4, 4), torch.rand(2, 1, 4, 4)
    before = g.clone(), m.clone()
    out = camfast.attention_branch_mix(g.requires_grad_(), m.requires_grad_(), backend=backend)
    out.backward(torch.randn_like(out))
    assert torch.equal(g, before[0]) and torch.equal(m, before[1])


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


def test_many_pixel_blocks_per_sample():
    """2048 float64 channels: the CPU kernels split each 12x13 map into several pixel blocks."""
    g = torch.randn(2, 2048, 12, 13, dtype=torch.float64)
    m = torch.rand(2, 1, 12, 13, dtype=torch.float64)
    for layout in ("contiguous", "channels_last"):
        assert_matches_reference(mix("cpp"), ref, in_layout(g, layout), m)
