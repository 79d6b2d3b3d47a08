"""The gradient CAM methods' raw map, the public function."""

from __future__ import annotations

import math

import torch

from .. import _backend, reference
from .._precision import promoted
from .._validation import check_choice, check_float_tensor, check_in_range, check_nchw, check_same_device
from ..reference.weighted_channel_sum import METHODS, XGRAD_EPS


def weighted_channel_sum(
    act: torch.Tensor,
    grad: torch.Tensor,
    method: str = "grad-cam",
    *,
    eps: float = XGRAD_EPS,
    backend: str | None = None,
) -> torch.Tensor:
    """The raw map of a gradient CAM method: per-channel statistics and the channel sum, fused.

    A = act[n] (K maps of h x w), g = grad[n] (or grad[t, n]: one class t of T), the gradient of
    the explained score with respect to A. Per image:

        "grad-cam"             w_k = mean_ij g_k                          map = ReLU(sum_k w_k A_k)
        "xgrad-cam"            w_k = sum_ij g_k A_k / (sum_ij A_k + eps)    map = ReLU(sum_k w_k A_k)
        "grad-cam++"           w_k = sum_ij alpha_k ReLU(g_k), the authors' alpha (camfast.cam.GradCAMPlusPlus)
        "grad-cam++/grad-cam"  the same with the grad-cam library's alpha
        "hires-cam"            map = ReLU(sum_k g_k A_k)
        "element-wise"         map = ReLU(sum_k ReLU(g_k A_k))
        "layer-cam"            map = ReLU(sum_k ReLU(g_k) A_k)

    The compiled backends read g once and A once (XGrad-CAM and Grad-CAM++: twice, the second
    time from cache when the layer fits), with no temporaries of A's size; the T classes of a 5-D
    grad share each read of A on the CPU. They accumulate in double for float32 (float32 for
    float16 and bfloat16) on the CPU, in the accumulation dtype with blocked sums on CUDA and
    Triton. Not differentiable on the compiled backends (an explainer's output).

    Args:
        act: Tensor[N, K, h, w], the target layer's activation, any strides.
        grad: Tensor[N, K, h, w], or Tensor[T, N, K, h, w] for T classes per image; on act's device.
        method: one of the names above.
        eps: >= 0, added to sum_ij A_k by "xgrad-cam" (grad-cam's 1e-7; torchcam uses 1e-8, the
            authors' code 1e-6); unused otherwise.
        backend: None/"auto", "cpp", "triton" or "reference" (see camfast.show_config()).

    Returns:
        Tensor[N, h, w] (or [T, N, h, w]) contiguous, in the dtype torch's type promotion gives act
        and grad (under torch.autocast: the autocast dtype, float64 inputs excepted).

    Example:
        >>> import torch, camfast
        >>> act = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])     # N=1, K=2 maps of 1 x 2
        >>> grad = torch.tensor([[[[0.5, 0.5]], [[-1.0, 1.0]]]])
        >>> camfast.weighted_channel_sum(act, grad, "grad-cam")     # w = (0.5, 0): ReLU(0.5 A_0)
        tensor([[[0.5000, 1.0000]]])
        >>> camfast.weighted_channel_sum(act, grad, "hires-cam")    # ReLU(g_0 A_0 + g_1 A_1) = ReLU([-2.5, 1])
        tensor([[[0., 1.]]])
        >>> camfast.weighted_channel_sum(act, torch.stack([grad, -grad]), "layer-cam").shape  # T = 2
        torch.Size([2, 1, 1, 2])
    """
    check_nchw(act, "act")
    check_float_tensor(grad, "grad", (4, 5), "[N, K, h, w] or [T, N, K, h, w]")
    check_same_device({"act": act, "grad": grad})
    if grad.shape[-4:] != act.shape:
        raise ValueError(f"grad must have act's shape [N, K, h, w] = {tuple(act.shape)} in its last four "
                         f"dimensions, got {tuple(grad.shape)}")
    method = check_choice(method, "method", METHODS)
    eps = check_in_range(eps, "eps", 0.0, math.inf)
    act, grad = promoted(act, grad)
    chosen = _backend.choose(backend, act, grad)
    if chosen == "reference":
        return reference.weighted_channel_sum(act, grad, method, eps)
    return _backend.run("weighted_channel_sum", chosen, act, grad, method, eps)
