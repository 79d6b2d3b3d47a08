"""The public functions: argument checks, backend choice, documented shapes."""

from .spatial_softmax2d import spatial_soft_argmax2d, spatial_softmax2d
from .thresholded_avg_pool2d import thresholded_avg_pool2d

__all__ = ["spatial_soft_argmax2d", "spatial_softmax2d", "thresholded_avg_pool2d"]
