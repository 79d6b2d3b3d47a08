import pytest
import torch

import camfast
from camfast import reference
from camfast_testing.checks import LAYOUTS, in_layout
from camfast_testing.op_tester import BACKEND_NAMES, BACKENDS, LayerOpTester, every_backend


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


class TestADL(LayerOpTester):
    op = "adl"
    shapes = ((3, 5, 7, 9), (1, 3, 1, 1))
    small_shape = (3, 4, 3, 5)
    bad_options = [
        ({"drop_rate": 1.5}, ValueError, r"drop_rate must lie in \[0, 1\]"),
        ({"drop_rate": -0.1}, ValueError, "drop_rate must lie in"),
        ({"threshold": float("nan")}, ValueError, "threshold must lie in"),
        ({"threshold": torch.tensor(0.8)}, TypeError, "threshold must be a real number"),
        ({"training": 1}, TypeError, "training must be a bool"),
        ({"per_sample": None}, TypeError, "per_sample must be a bool"),
        ({"use_drop": 1}, TypeError, "use_drop must be None, a bool"),
        ({"use_drop": torch.ones(4, dtype=torch.bool)}, ValueError,
         r"use_drop must be a bool tensor of shape \(\) or \(N,\)"),
        ({"use_drop": torch.ones(3)}, ValueError, "use_drop must be a bool tensor"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ]

    def inputs(self, shape, dtype, device, layout):
        return (in_layout(torch.randn(shape, device=device).to(dtype), layout),)

    def options(self, x):
        return [dict(use_drop=use_drop) for use_drop in branches(x.shape[0], x.device)]

    def compile_options(self, x):
        return dict(use_drop=branches(x.shape[0], x.device)[-1])

    def ref(self, x, use_drop, threshold=0.8):
        return reference.adl(x, as_flags(use_drop, x.shape[0], x.device), threshold)

    def op_args(self, x):
        return [(x, branches(x.shape[0], x.device)[-1], 0.8)]

    @pytest.mark.parametrize("backend", BACKEND_NAMES)
    def test_bad_input_same_error_on_every_backend(self, backend, make, kwargs, error, message):
        super().test_bad_input_same_error_on_every_backend(backend, make, kwargs, error, message)
        with pytest.raises(error, match=message):  # checked in evaluation mode too
            self.call(backend, *make(), **{"training": False, **kwargs})

    @every_backend
    def test_compile_fullgraph(self, device, backend):
        super().test_compile_fullgraph(device, backend)
        # The branch drawn inside the graph is one of the two.
        x = torch.randn(2, 3, 4, 5, device=device)
        drawn = torch.compile(lambda t: camfast.adl(t, backend=backend), fullgraph=True)(x)
        assert any(torch.allclose(drawn, reference.adl(x, torch.tensor(b), 0.8)) for b in (True, False))

    @every_backend
    def test_thresholds_after_relu(self, device, backend):
        x = torch.randn(2, 6, 5, 5, device=device).relu()
        for threshold in (0.0, 0.5, 1.0):
            for use_drop in branches(2, device):
                self.assert_matches_reference(backend, x, use_drop=use_drop, threshold=threshold)

    @every_backend
    def test_edge_maps(self, device, backend):
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
        for layout in LAYOUTS:
            xl = in_layout(x, layout)
            torch.testing.assert_close(self.call(backend, xl, threshold=0.5, use_drop=True), x * mask, equal_nan=True)
            for use_drop in branches(x.shape[0], device):
                self.assert_matches_reference(backend, xl, use_drop=use_drop, threshold=0.5)

    @every_backend
    def test_grad_out_in_any_layout(self, device, backend):
        """grad_out laid out unlike x (channels_last vs NCHW) or expanded, as out.sum() gives it."""
        x = torch.randn(2, 6, 3, 5, device=device)
        for layout in ("contiguous", "channels_last"):
            for use_drop in branches(2, device):
                grads = [torch.randn(x.shape, device=device).contiguous(memory_format=f)
                         for f in (torch.contiguous_format, torch.channels_last)]
                grads.append(torch.randn((), device=device).expand(x.shape))
                for grad_out in grads:
                    xs = [in_layout(x, layout).requires_grad_() for _ in range(2)]
                    (g,) = torch.autograd.grad(self.call(backend, xs[0], use_drop=use_drop), xs[0], grad_out)
                    (g_ref,) = torch.autograd.grad(self.ref(xs[1], use_drop), xs[1], grad_out)
                    torch.testing.assert_close(g, g_ref)

    @pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p.values[1] == "cpp"])
    def test_fewer_samples_than_threads(self, device, backend):
        """The CPU forward splits samples into pixel blocks when threads outnumber samples."""
        threads = torch.get_num_threads()
        torch.set_num_threads(4)
        try:
            for layout in ("contiguous", "channels_last"):
                x = in_layout(torch.randn(3, 70, 30, 30, device=device), layout)
                for use_drop in branches(3, device):
                    self.assert_matches_reference(backend, x, use_drop=use_drop)
        finally:
            torch.set_num_threads(threads)

    @pytest.mark.parametrize("device,backend", [p for p in BACKENDS if p.values[1] == "cpp"])
    def test_outputs_past_the_pool_size(self, device, backend):
        """Outputs of 32 MB and more come from the CPU pool of freed outputs (csrc/common/memory.h)."""
        x = torch.randn(2, 1024, 64, 64, device=device)
        for use_drop in (True, False):
            self.assert_matches_reference(backend, x, use_drop=use_drop)

    @every_backend
    def test_draw_matches_the_authors_stream(self, device, backend):
        """Same seed, same branch as wsolevaluation: one U[0, 1) draw from the default CPU generator."""
        x = torch.randn(2, 3, 4, 4, device=device)
        for seed in range(8):
            torch.manual_seed(seed)
            expected = authors_adl(x.cpu(), 0.75, 0.8).to(device)
            torch.manual_seed(seed)
            torch.testing.assert_close(camfast.adl(x, 0.75, 0.8, backend=backend), expected)

    @every_backend
    def test_generator_is_deterministic(self, device, backend):
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
