"""Post-hoc CAM explainers: `explainer(x, targets=None) -> Tensor[N, H, W]` in [0, 1].

Each takes the model and a target layer (the module or its dotted name; the gradient methods
also take a list of layers and fuse them). Targets may give several classes per image
(`[N, T]`, result `[N, T, H, W]`), and `score=` explains models whose output is not a logits
tensor; see camfast.cam._base for the full convention. Hooks exist only during a call; the model's train/eval flags and its parameters' requires_grad flags are restored after
it, also when it raises. Gradients come from torch.autograd.grad with respect to the activation
only, so no parameter's .grad is touched.
"""

from .ablation import AblationCAM
from .eigen import EigenCAM, EigenGradCAM
from .fullgrad import FullGrad
from .finer import FinerCAM
from .fully import FullyCAM
from .gradient import (CAM, FEM, GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM, LayerCAM, ShapleyCAM,
                       XGradCAM)
from .overlay import jet, overlay
from .refine import RefineCAM
from .score import ISCAM, PRESETS, SSCAM, ScoreCAM
from .smooth import SmoothGradCAMpp
from .transformers import TokenGrid

__all__ = ["CAM", "FEM", "AblationCAM", "EigenCAM", "EigenGradCAM", "FinerCAM", "FullGrad", "FullyCAM", "GradCAM",
           "GradCAMElementWise", "GradCAMPlusPlus", "HiResCAM", "ISCAM", "LayerCAM", "PRESETS", "RefineCAM", "SSCAM",
           "ScoreCAM", "ShapleyCAM", "SmoothGradCAMpp", "TokenGrid", "XGradCAM", "jet", "overlay"]
