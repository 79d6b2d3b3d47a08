"""nn.Module wrappers around camfast's ops: arguments and repr only, the logic lives in the ops."""

from __future__ import annotations

import torch
from torch import nn

from . import ops


class ThresholdedAvgPool2d(nn.Module):
    """Thresholded average pooling; a drop-in for nn.AdaptiveAvgPool2d(1).

    Returns Tensor[N, C, 1, 1], or Tensor[N, C] with flatten=True. See
    camfast.thresholded_avg_pool2d.
    """

    def __init__(self, tau: float = 0.1, flatten: bool = False, backend: str | None = None):
        super().__init__()
        self.tau = tau
        self.flatten = flatten
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = ops.thresholded_avg_pool2d(x, self.tau, backend=self.backend)
        return pooled if self.flatten else pooled[:, :, None, None]

    def extra_repr(self) -> str:
        return f"tau={self.tau}, flatten={self.flatten}"
