import pytest
import torch

import camfast
from camfast import reference
from utils import LAYOUTS, assert_compiles_like_reference, assert_matches_reference, compiled_backends, dtypes_for, in_layout

OP = "adl"
BACKENDS = compiled_backends()


def fused(backend, use_drop, threshold=0.8):
    return lambda x: camfast.adl(x, threshold=threshold, use_drop=use_drop, backend=backend)


def ref(drop, threshold=0.8):
    return lambda x: reference.adl(x, drop, threshold)


def branches(n, device):
    """use_drop values: the whole batch in each branch, then the branches mixed per sample."""
    mixed = torch.arange(n, device=device) % 2 == 0
    return [True, False, mixed]


def as_flags(use_drop, n, device):
    return torch.full((n,), use_drop, device=device) if isinstance(use_drop, bool) else use_drop


def authors_adl(x, drop_rate, threshold):
    """wsolevaluation's ADL.forward (training), verbatim but for names: the RNG-parity oracle."""
    attention = torch.mean(x, dim=1, keepdim=True)
    importance_map = torch.sigmoid(attention)
    max_val, _ = torch.max(attention.view(x.size(0), -1), dim=1, keepdim=True)
    thr_val = max_val * threshold
    thr_val = thr_val.view(x.size(0), 1, 1, 1)
    drop_mask = (attention < thr_val).float()
    random_tensor = torch.rand([], dtype=torch.float32) + drop_rate
    binary_tensor = random_tensor.floor()
    selected_map = (1.0 - binary_tensor) * importance_map + binary_tensor * drop_mask
    return x.mul(selected_map)


def shapes(backend):
    # The Triton interpreter runs one program at a time on CPU: keep its cases small.
    return [(3, 5, 7, 9), (1, 3, 1, 1)] if backend == "triton" else [(3, 70, 14, 14), (3, 5, 7, 9), (1, 3, 1, 1)]


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_matches_reference_on_random_inputs(device, backend):
    for dtype in dtypes_for(device, backend):
        for shape in shapes(backend):
            for layout in LAYOUTS:
                x = in_layout(torch.randn(shape, device=device).to(dtype), layout)
                for use_drop in branches(shape[0], device):
                    drop = as_flags(use_drop, shape[0], device)
                    assert_matches_reference(fused(backend, use_drop), ref(drop), x)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_thresholds_after_relu(device, backend):
    x = torch.randn(2, 6, 5, 5, device=device).relu()
    for threshold in (0.0, 0.5, 1.0):
        for use_drop in branches(2, device):
            drop = as_flags(use_drop, 2, device)
            assert_matches_reference(fused(backend, use_drop, threshold), ref(drop, threshold), x)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_edge_maps(device, backend):
    """Ties at the threshold, zero, negative, NaN and inf maps (threshold 0.5), per sample."""
    maps = {  # attention map (2 x 2) -> drop mask
        "tie at threshold": ([10.0, 5.0, 5.0, 1.0], [0, 0, 0, 1]),  # 0.5 * 10 == 5: strict <
        "all zero": ([0.0, 0.0, 0.0, 0.0], [0, 0, 0, 0]),
        "negative": ([-1.0, -2.0, -3.0, -4.0], [1, 1, 1, 1]),  # 0.5 * max > max
        "nan": ([1.0, float("nan"), 2.0, 3.0], [0, 0, 0, 0]),
        "+inf": ([1.0, float("inf"), 2.0, 3.0], [1, 0, 1, 1]),
        "-inf": ([1.0, float("-inf"), 2.0, 3.0], [1, 1, 0, 0]),
        "ties at max": ([2.0, 2.0, 1.0, 0.0], [0, 0, 0, 1]),
    }
    a = torch.tensor([m for m, _ in maps.values()], device=device).reshape(-1, 1, 2, 2)
    mask = torch.tensor([k for _, k in maps.values()], device=device, dtype=torch.float32).reshape(-1, 1, 2, 2)
    x = a.expand(-1, 3, -1, -1).contiguous()  # three equal channels: their mean is a, exactly
    n = x.shape[0]
    for layout in LAYOUTS:
        xl = in_layout(x, layout)
        torch.testing.assert_close(camfast.adl(xl, threshold=0.5, use_drop=True, backend=backend), x * mask,
                                   equal_nan=True)
        for use_drop in branches(n, device):
            assert_matches_reference(fused(backend, use_drop, 0.5), ref(as_flags(use_drop, n, device), 0.5), xl)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_grad_out_in_any_layout(device, backend):
    """grad_out laid out unlike x (channels_last vs NCHW) or expanded, as out.sum() gives it."""
    x = torch.randn(2, 6, 3, 5, device=device)
    for layout in ("contiguous", "channels_last"):
        for use_drop in branches(2, device):
            drop = as_flags(use_drop, 2, device)
            grads = [torch.randn(x.shape, device=device).contiguous(memory_format=f)
                     for f in (torch.contiguous_format, torch.channels_last)]
            grads.append(torch.randn((), device=device).expand(x.shape))
            for grad_out in grads:
                xs = [in_layout(x, layout).requires_grad_() for _ in range(2)]
                (g,) = torch.autograd.grad(camfast.adl(xs[0], use_drop=use_drop, backend=backend), xs[0], grad_out)
                (g_ref,) = torch.autograd.grad(reference.adl(xs[1], drop, 0.8), xs[1], grad_out)
                torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p.values[1] == "cpp"])
def test_fewer_samples_than_threads(device, backend):
    """The CPU forward splits samples into pixel blocks when threads outnumber samples."""
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        for layout in ("contiguous", "channels_last"):
            x = in_layout(torch.randn(3, 70, 30, 30, device=device), layout)
            for use_drop in branches(3, device):
                assert_matches_reference(fused(backend, use_drop), ref(as_flags(use_drop, 3, device)), x)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p.values[1] == "cpp"])
def test_outputs_past_the_huge_page_size(device, backend):
    """Outputs of 32 MB and more take the CPU's huge-page path (csrc/cpu/memory.h)."""
    x = torch.randn(2, 1024, 64, 64, device=device)
    for use_drop in (True, False):
        assert_matches_reference(fused(backend, use_drop), ref(torch.tensor([use_drop] * 2, device=device)), x)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_empty_batch_and_channels(device, backend):
    for shape in [(0, 4, 5, 5), (2, 0, 5, 5)]:
        for use_drop in (True, False):
            x = torch.randn(shape, device=device, requires_grad=True)
            out = camfast.adl(x, use_drop=use_drop, backend=backend)
            assert out.shape == shape
            out.sum().backward()
            assert x.grad.shape == x.shape


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gradcheck(device, backend):
    x = torch.randn(3, 4, 3, 5, dtype=torch.float64, device=device)
    for use_drop in branches(3, device):
        for layout in ("contiguous", "channels_last"):
            xl = in_layout(x, layout).requires_grad_()
            assert torch.autograd.gradcheck(fused(backend, use_drop), (xl,))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_opcheck(device, backend):
    op = getattr(torch.ops.camfast, OP + ("_triton" if backend == "triton" else ""))
    drop = torch.tensor([True, False], device=device)
    for layout in ("contiguous", "channels_last"):
        x = in_layout(torch.randn(2, 3, 4, 5, device=device), layout).requires_grad_()
        torch.library.opcheck(op, (x, drop, 0.8))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    x = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    drop = torch.tensor([True, False], device=device)
    assert_compiles_like_reference(fused(backend, drop), ref(drop), x)
    # The branch drawn inside the graph is one of the two.
    drawn = torch.compile(lambda t: camfast.adl(t, backend=backend), fullgraph=True)(x.detach())
    assert any(torch.allclose(drawn, reference.adl(x.detach(), torch.tensor(b), 0.8)) for b in (True, False))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_draw_matches_the_authors_stream(device, backend):
    """Same seed, same branch as wsolevaluation: one U[0, 1) draw from the default CPU generator."""
    x = torch.randn(2, 3, 4, 4, device=device)
    for seed in range(8):
        torch.manual_seed(seed)
        expected = authors_adl(x.cpu(), 0.75, 0.8).to(device)
        torch.manual_seed(seed)
        torch.testing.assert_close(camfast.adl(x, 0.75, 0.8, backend=backend), expected)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_generator_is_deterministic(device, backend):
    x = torch.randn(6, 3, 4, 4, device=device)
    for per_sample in (False, True):
        outs = []
        for _ in range(2):
            g = torch.Generator().manual_seed(1234)
            outs.append([camfast.adl(x, generator=g, per_sample=per_sample, backend=backend) for _ in range(4)])
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # The branches are the ones the same stream gives: floor(U + drop_rate), U ~ U[0, 1).
        g = torch.Generator().manual_seed(1234)
        for out in outs[0]:
            drop = torch.floor(torch.rand([6] if per_sample else [], generator=g) + 0.75) > 0
            torch.testing.assert_close(out, reference.adl(x, drop.expand(6), 0.8))


def test_draw_frequency_and_extreme_rates():
    x = torch.randn(4, 2, 3, 3)
    g = torch.Generator().manual_seed(0)
    outs = [camfast.adl(x, 0.75, generator=g, per_sample=True, backend="reference") for _ in range(500)]
    dropped = torch.stack([(out == reference.adl(x, torch.tensor(True), 0.8)).flatten(1).all(1) for out in outs])
    assert abs(dropped.float().mean().item() - 0.75) < 0.05
    for rate, drop in ((1.0, True), (0.0, False)):
        for _ in range(20):
            torch.testing.assert_close(camfast.adl(x, rate), reference.adl(x, torch.tensor(drop), 0.8))


def test_use_drop_draws_no_random_numbers():
    g = torch.Generator().manual_seed(7)
    camfast.adl(torch.randn(2, 3, 4, 4), use_drop=True, generator=g)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(7).get_state())


def test_reference_matches_the_authors_blend():
    x = torch.randn(4, 8, 6, 6)
    for seed in range(6):
        torch.manual_seed(seed)
        expected = authors_adl(x, 0.75, 0.9)
        torch.manual_seed(seed)
        drop = torch.floor(torch.rand([]) + 0.75) > 0
        torch.testing.assert_close(reference.adl(x, drop, 0.9), expected)


BAD_INPUTS = [
    (lambda: torch.randn(2, 3, 4), {}, ValueError, "x must be 4-D"),
    (lambda: torch.ones(2, 3, 4, 4, dtype=torch.int64), {}, TypeError, "x must be float16"),
    (lambda: torch.randn(2, 3, 0, 4), {}, ValueError, "H > 0 and W > 0"),
    (lambda: [[1.0]], {}, TypeError, "x must be a torch.Tensor"),
    (lambda: torch.randn(2, 3, 4, 4), {"drop_rate": 1.5}, ValueError, r"drop_rate must lie in \[0, 1\]"),
    (lambda: torch.randn(2, 3, 4, 4), {"drop_rate": -0.1}, ValueError, "drop_rate must lie in"),
    (lambda: torch.randn(2, 3, 4, 4), {"threshold": float("nan")}, ValueError, "threshold must lie in"),
    (lambda: torch.randn(2, 3, 4, 4), {"threshold": torch.tensor(0.8)}, TypeError, "threshold must be a real number"),
    (lambda: torch.randn(2, 3, 4, 4), {"training": 1}, TypeError, "training must be a bool"),
    (lambda: torch.randn(2, 3, 4, 4), {"per_sample": None}, TypeError, "per_sample must be a bool"),
    (lambda: torch.randn(2, 3, 4, 4), {"use_drop": 1}, TypeError, "use_drop must be None, a bool"),
    (lambda: torch.randn(2, 3, 4, 4), {"use_drop": torch.ones(3, dtype=torch.bool)}, ValueError,
     r"use_drop must be a bool tensor of shape \(\) or \(N,\)"),
    (lambda: torch.randn(2, 3, 4, 4), {"use_drop": torch.ones(2)}, ValueError, "use_drop must be a bool tensor"),
    (lambda: torch.randn(2, 3, 4, 4), {"generator": 0}, TypeError, "generator must be a torch.Generator"),
]


@pytest.mark.parametrize("backend", ["reference", *[p.values[1] for p in BACKENDS]])
@pytest.mark.parametrize("make,kwargs,error,message", BAD_INPUTS)
def test_bad_input_same_error_on_every_backend(backend, make, kwargs, error, message):
    with pytest.raises(error, match=message):
        camfast.adl(make(), backend=backend, **kwargs)
    with pytest.raises(error, match=message):  # checked in evaluation mode too
        camfast.adl(make(), backend=backend, **{"training": False, **kwargs})


def test_eval_returns_x_itself():
    x = torch.randn(2, 3, 4, 4)
    assert camfast.adl(x, training=False) is x
    layer = camfast.nn.ADL().eval()
    assert layer(x) is x


def test_module():
    layer = camfast.nn.ADL(drop_rate=0.0, threshold=0.9)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(layer(x), reference.adl(x, torch.tensor(False), 0.9))
    assert "drop_rate=0.0, threshold=0.9" in repr(layer)
    for kwargs, name in (({"drop_rate": 1.5}, "drop_rate"), ({"threshold": -1}, "threshold")):
        with pytest.raises(ValueError, match=f"{name} must lie in"):
            camfast.nn.ADL(**kwargs)


def test_input_is_not_modified():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    before = x.detach().clone()
    for use_drop in (True, False):
        camfast.adl(x, use_drop=use_drop).sum().backward()
    assert torch.equal(x.detach(), before)
