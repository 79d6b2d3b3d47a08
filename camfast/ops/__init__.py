"""The public functions: argument checks, backend choice, documented shapes."""

from .attention_branch_mix import attention_branch_mix
from .channel_spatial_attention import channel_spatial_attention, ggam_loss
from .thresholded_avg_pool2d import thresholded_avg_pool2d

__all__ = ["attention_branch_mix", "channel_spatial_attention", "ggam_loss", "thresholded_avg_pool2d"]
