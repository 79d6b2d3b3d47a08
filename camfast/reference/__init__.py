"""Plain, differentiable PyTorch versions of every op: the specification each backend is tested
against. Each works in float64 and is never edited to fit a kernel."""

from .score_cam_masks import score_cam_masks
from .thresholded_avg_pool2d import thresholded_avg_pool2d

__all__ = ["score_cam_masks", "thresholded_avg_pool2d"]
