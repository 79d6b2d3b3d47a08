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


class _SpatialSoftmaxBase(nn.Module):
    """The temperature of the spatial softmax modules: a float, or a learnable nn.Parameter.

    A learnable temperature gets its gradient from autograd through `x / temperature`; the op then
    runs with temperature 1, which is exact (softmax((x / T) / 1) = softmax(x / T)) and costs one
    elementwise pass. Nothing keeps a learnable temperature positive: that is the training's job.
    """

    def __init__(self, temperature: float, learnable: bool, backend: str | None):
        super().__init__()
        self.learnable = learnable
        self.backend = backend
        if learnable:
            self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        else:
            self.temperature = temperature

    def _scaled(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(input, temperature) for the op."""
        if self.learnable:
            return x / self.temperature.to(x.dtype), 1.0
        return x, self.temperature

    def extra_repr(self) -> str:
        value = float(self.temperature.detach()) if self.learnable else self.temperature
        return f"temperature={value}" + (", learnable=True" if self.learnable else "")


class SpatialSoftmax2d(_SpatialSoftmaxBase):
    """Softmax over the H*W values of each channel map of x / temperature: [N, C, H, W] in and out.

    See camfast.spatial_softmax2d. learnable=True makes the temperature an nn.Parameter.
    """

    def __init__(self, temperature: float = 1.0, learnable: bool = False, backend: str | None = None):
        super().__init__(temperature, learnable, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, temperature = self._scaled(x)
        return ops.spatial_softmax2d(x, temperature, backend=self.backend)


class SpatialSoftArgmax2d(_SpatialSoftmaxBase):
    """Expected (x, y) keypoint of each channel map: [N, C, H, W] -> [N, C, 2].

    See camfast.spatial_soft_argmax2d. learnable=True makes the temperature an nn.Parameter.
    """

    def __init__(self, temperature: float = 1.0, normalized_coordinates: bool = True, learnable: bool = False,
                 backend: str | None = None):
        super().__init__(temperature, learnable, backend)
        self.normalized_coordinates = normalized_coordinates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, temperature = self._scaled(x)
        return ops.spatial_soft_argmax2d(x, temperature, self.normalized_coordinates, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalized_coordinates={self.normalized_coordinates}"
