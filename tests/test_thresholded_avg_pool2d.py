import torch

import camfast
from camfast_testing.checks import LAYOUTS, in_layout
from camfast_testing.op_tester import LayerOpTester, every_backend


class TestThresholdedAvgPool2d(LayerOpTester):
    op = "thresholded_avg_pool2d"
    bad_options = [
        ({"tau": 1.5}, ValueError, r"tau must lie in \[0, 1\]"),
        ({"tau": float("nan")}, ValueError, "tau must lie in"),
        ({"tau": torch.tensor(0.1)}, TypeError, "tau must be a real number"),
    ]

    def inputs(self, shape, dtype, device, layout):
        return (in_layout(torch.randn(shape, device=device).relu().to(dtype), layout),)

    def options(self, x):
        return [dict(tau=tau) for tau in (0.1, 0.0, 1.0)]

    def gradcheck_options(self, x):
        return [{}]

    def output_shape(self, shape):
        return tuple(shape[:2])

    def op_args(self, x):
        return [(x, 0.1)]

    @every_backend
    def test_edge_rows(self, device, backend):
        """Ties at the threshold, zero, negative, NaN and +inf rows, as the authors' code gives them."""
        row = torch.tensor
        rows = {
            "tie at threshold": row([10.0, 1.0, 1.0, 0.5]),  # tau * max == 1: strict > drops both 1s
            "all zero": row([0.0, 0.0, 0.0, 0.0]),
            "negative": row([-1.0, -2.0, -3.0, -4.0]),
            "nan": row([1.0, float("nan"), 2.0, 3.0]),
            "+inf": row([1.0, float("inf"), 2.0, 3.0]),
            "-inf": row([1.0, float("-inf"), 2.0, 3.0]),
            "ties at max": row([2.0, 2.0, 1.0, 0.0]),
        }
        x = torch.stack(list(rows.values())).reshape(1, len(rows), 2, 2).to(device)
        expected = torch.tensor([[10.0, 0.0, 0.0, 0.0, 0.0, 2.0, 5.0 / 3.0]], device=device)
        for layout in LAYOUTS:
            xl = in_layout(x, layout)
            torch.testing.assert_close(self.call(backend, xl, tau=0.1), expected)
            self.assert_matches_reference(backend, xl)
        # tau = 1 keeps nothing, not even ties at the maximum.
        torch.testing.assert_close(self.call(backend, x, tau=1.0), torch.zeros_like(expected))


def test_module_drops_in_for_adaptive_avg_pool():
    pool = camfast.nn.ThresholdedAvgPool2d(tau=0.0)
    x = torch.rand(2, 3, 4, 4) + 0.1  # all positive: tau = 0 keeps everything, so it equals GAP
    torch.testing.assert_close(pool(x), torch.nn.AdaptiveAvgPool2d(1)(x))
    assert camfast.nn.ThresholdedAvgPool2d(flatten=True)(x).shape == (2, 3)
    assert "tau=0.0" in repr(pool)
