"""nn.Module wrappers around camfast's ops: arguments and repr only, the logic lives in the ops."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from ._validation import check_in_range


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


class ADL(nn.Module):
    """Attention-based dropout layer (Choe and Shim, CVPR 2019); identity in eval mode.

    Each training call multiplies x by its drop mask (probability drop_rate) or by its importance
    map sigmoid(mean over channels). See camfast.adl.
    """

    def __init__(self, drop_rate: float = 0.75, threshold: float = 0.8, per_sample: bool = False,
                 generator: torch.Generator | None = None, backend: str | None = None):
        super().__init__()
        self.drop_rate = check_in_range(drop_rate, "drop_rate", 0.0, 1.0)
        self.threshold = check_in_range(threshold, "threshold", 0.0, 1.0)
        self.per_sample = per_sample
        self.generator = generator
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.adl(x, self.drop_rate, self.threshold, training=self.training, generator=self.generator,
                       per_sample=self.per_sample, backend=self.backend)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, threshold={self.threshold}" + (", per_sample=True" if self.per_sample else "")
