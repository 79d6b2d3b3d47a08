"""The base of camfast's stateful evaluators: torchmetrics.Metric when it is installed.

With torchmetrics (`pip install camfast[metrics]`), the evaluators sync their states across
processes (torch.distributed), reset, and log under Lightning as any torchmetrics metric. Without
it they are plain accumulators with the same update/compute/reset methods, and camfast imports
all the same.
"""

from __future__ import annotations

import math

import torch

try:
    from torchmetrics import Metric
except ImportError:  # the stand-in: the same states and methods, no sync
    class Metric(torch.nn.Module):
        """Accumulates states declared by add_state; compute reads them, reset restores them."""

        full_state_update = False

        def __init__(self, **kwargs):
            super().__init__()
            self._defaults: dict[str, object] = {}

        def add_state(self, name: str, default, dist_reduce_fx=None, persistent: bool = False) -> None:
            self._defaults[name] = default
            setattr(self, name, default.clone() if isinstance(default, torch.Tensor) else list(default))

        def reset(self) -> None:
            for name, default in self._defaults.items():
                setattr(self, name, default.clone() if isinstance(default, torch.Tensor) else list(default))

        def forward(self, *args, **kwargs):
            self.update(*args, **kwargs)


def concatenated(state) -> torch.Tensor:
    """A list state (before a sync) or its concatenation (after one) as one tensor."""
    if isinstance(state, torch.Tensor):
        return state
    return torch.cat(list(state)) if len(state) else torch.empty(0, dtype=torch.float64)


def order_free_mean(values: torch.Tensor) -> float:
    """The mean of the non-NaN values from their exactly rounded sum (math.fsum): the same bits
    whatever order the values were gathered in, by one process or many."""
    values = values.double().flatten()
    values = values[~values.isnan()].tolist()
    return math.fsum(values) / len(values) if values else float("nan")
