"""Plain, differentiable PyTorch versions of every op: the specification each backend is tested
against. Each works in float64 and is never edited to fit a kernel."""

from .spatial_softmax2d import spatial_soft_argmax2d, spatial_softmax2d
from .thresholded_avg_pool2d import thresholded_avg_pool2d

__all__ = ["spatial_soft_argmax2d", "spatial_softmax2d", "thresholded_avg_pool2d"]
