"""The public functions: argument checks, backend choice, documented shapes."""

from .adl import adl
from .thresholded_avg_pool2d import thresholded_avg_pool2d

__all__ = ["adl", "thresholded_avg_pool2d"]
