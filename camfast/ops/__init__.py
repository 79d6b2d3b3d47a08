"""The public functions: argument checks, backend choice, documented shapes."""

from .adl import adl
from .attention_branch_mix import attention_branch_mix
from .channel_spatial_attention import channel_spatial_attention, ggam_loss
from .score_cam_masks import score_cam_masks
from .spatial_softmax2d import spatial_soft_argmax2d, spatial_softmax2d
from .thresholded_avg_pool2d import thresholded_avg_pool2d
from .weighted_channel_sum import weighted_channel_sum

__all__ = [
    "adl",
    "attention_branch_mix",
    "channel_spatial_attention",
    "ggam_loss",
    "score_cam_masks",
    "spatial_soft_argmax2d",
    "spatial_softmax2d",
    "thresholded_avg_pool2d",
    "weighted_channel_sum",
]
