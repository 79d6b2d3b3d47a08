"""The public functions: argument checks, backend choice, documented shapes."""

from .thresholded_avg_pool2d import thresholded_avg_pool2d

__all__ = ["thresholded_avg_pool2d"]
