"""camfast: fused kernels for class-activation maps and weakly-supervised object localization."""

from ._version import __version__
from . import _backend, _extension, _registrations  # noqa: F401  (loads camfast._C, registers fakes/autograd)
from . import cam, nn, reference
from ._config import show_config
from .ops import (
    adl,
    attention_branch_mix,
    channel_spatial_attention,
    ggam_loss,
    score_cam_masks,
    spatial_soft_argmax2d,
    spatial_softmax2d,
    thresholded_avg_pool2d,
    weighted_channel_sum,
)

_backend.load_triton_ops()

__all__ = [
    "__version__",
    "adl",
    "attention_branch_mix",
    "cam",
    "channel_spatial_attention",
    "ggam_loss",
    "nn",
    "reference",
    "score_cam_masks",
    "show_config",
    "spatial_soft_argmax2d",
    "spatial_softmax2d",
    "thresholded_avg_pool2d",
    "weighted_channel_sum",
]
