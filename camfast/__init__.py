"""camfast: fused kernels for class-activation maps and weakly-supervised object localization."""

from ._version import __version__
from . import _backend, _extension, _registrations  # noqa: F401  (loads camfast._C, registers fakes/autograd)
from . import nn, reference
from . import cam  # the explainers (camfast.cam.GradCAM, ...)
from ._config import show_config
from .ops import score_cam_masks, thresholded_avg_pool2d

_backend.load_triton_ops()

__all__ = ["__version__", "cam", "nn", "reference", "score_cam_masks", "show_config", "thresholded_avg_pool2d"]
