"""The public functions: argument checks, backend choice, documented shapes."""

from .score_cam_masks import score_cam_masks
from .thresholded_avg_pool2d import thresholded_avg_pool2d

__all__ = ["score_cam_masks", "thresholded_avg_pool2d"]
