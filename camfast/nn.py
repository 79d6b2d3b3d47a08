"""nn.Module wrappers around camfast's ops. Most store their arguments and call the op; ChannelSpatialAttention
and AttentionBranch reproduce the authors' modules and own their convolutions and batch norms."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from ._validation import check_in_range

__all__ = ["ADL", "AttentionBranch", "ChannelSpatialAttention", "SpatialSoftArgmax2d", "SpatialSoftmax2d",
           "ThresholdedAvgPool2d"]


class ThresholdedAvgPool2d(nn.Module):
    """Thresholded average pooling; a drop-in for nn.AdaptiveAvgPool2d(1).

    Returns Tensor[N, C, 1, 1], or Tensor[N, C] with flatten=True. See
    camfast.thresholded_avg_pool2d.

    Example:
        >>> import torch, camfast
        >>> pool = camfast.nn.ThresholdedAvgPool2d(tau=0.5)
        >>> pool(torch.tensor([[[[1., 2.], [3., 4.]]]]))     # the mean of the entries above 0.5 * 4
        tensor([[[[3.5000]]]])
        >>> camfast.nn.ThresholdedAvgPool2d(flatten=True)(torch.rand(2, 8, 7, 7)).shape
        torch.Size([2, 8])
    """

    def __init__(self, tau: float = 0.1, flatten: bool = False, backend: str | None = None):
        super().__init__()
        self.tau = tau
        self.flatten = flatten
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = ops.thresholded_avg_pool2d(x, self.tau, backend=self.backend)
        return pooled if self.flatten else pooled[:, :, None, None]

    def extra_repr(self) -> str:
        return f"tau={self.tau}, flatten={self.flatten}"


class ADL(nn.Module):
    """Attention-based dropout layer (Choe and Shim, CVPR 2019); identity in eval mode.

    Each training call multiplies x by its drop mask (probability drop_rate) or by its importance
    map sigmoid(mean over channels). See camfast.adl.

    Example:
        >>> import torch, camfast
        >>> adl = camfast.nn.ADL(drop_rate=0.75, threshold=0.8)
        >>> x = torch.rand(2, 8, 7, 7)
        >>> adl(x).shape                                    # training mode: one branch drawn per call
        torch.Size([2, 8, 7, 7])
        >>> adl.eval()(x) is x                              # identity in eval mode
        True
    """

    def __init__(self, drop_rate: float = 0.75, threshold: float = 0.8, per_sample: bool = False,
                 generator: torch.Generator | None = None, backend: str | None = None):
        super().__init__()
        self.drop_rate = check_in_range(drop_rate, "drop_rate", 0.0, 1.0)
        self.threshold = check_in_range(threshold, "threshold", 0.0, 1.0)
        self.per_sample = per_sample
        self.generator = generator
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.adl(x, self.drop_rate, self.threshold, training=self.training, generator=self.generator,
                       per_sample=self.per_sample, backend=self.backend)

    def extra_repr(self) -> str:
        extra = ", per_sample=True" if self.per_sample else ""
        return f"drop_rate={self.drop_rate}, threshold={self.threshold}{extra}"


class ChannelSpatialAttention(nn.Module):
    """GGAM's channel-spatial attention module (the authors' Spatial_SEModule).

    Channel attention s = softmax_c(conv1x1(relu(conv1x1(GAP(a))))), both 1x1 convs with bias
    (channels -> channels // reduction -> channels), then camfast.channel_spatial_attention(a, s).

    forward(a) returns out [N, C, H, W]; forward(a, return_attention=True) returns (out, s) with
    s [N, C] not detached, for camfast.ggam_loss. The module keeps no tensor of the step, so it
    can be copied, pickled and saved at any point and holds no autograd graph after the step. As
    in the authors' training step, the Grad-CAM weights are the spatial means of the gradient of
    the top predicted logits with respect to `out`:

        >>> import torch, camfast
        >>> module, head = camfast.nn.ChannelSpatialAttention(32, reduction=8), torch.nn.Linear(32, 5)
        >>> out, s = module(torch.rand(4, 32, 6, 6), return_attention=True)
        >>> logits = head(out.amax(dim=(2, 3)))
        >>> w = torch.autograd.grad(logits.max(1).values.sum(), out, retain_graph=True)[0].mean((2, 3))
        >>> loss = torch.nn.functional.cross_entropy(logits, torch.arange(4)) + camfast.ggam_loss(s, w)
        >>> loss.backward()
    """

    def __init__(self, channels: int, reduction: int = 16, spatial: str = "sigmoid", backend: str | None = None):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)
        self.spatial = spatial
        self.backend = backend

    def forward(self, a: torch.Tensor, return_attention: bool = False):
        pooled = a.mean(dim=(2, 3), keepdim=True)
        s = torch.softmax(self.fc2(torch.relu(self.fc1(pooled))), dim=1).flatten(1)
        out = ops.channel_spatial_attention(a, s, self.spatial, backend=self.backend)
        return (out, s) if return_attention else out

    def extra_repr(self) -> str:
        return f"spatial={self.spatial!r}"


class AttentionBranch(nn.Module):
    """The attention branch of ABN (Fukui et al., CVPR 2019), as in the authors' ResNet.

    From features x [N, in_channels, H, W] (after the optional `body`, the authors' att_layer4):
    h = relu(BN(conv1x1(BN(x)) -> num_classes)); the attention map m = sigmoid(BN(conv3x3(h) -> 1))
    and the attention logits = GAP(conv1x1(h)). forward returns ((1 + m) * x, logits) with the
    fused camfast.attention_branch_mix. forward(x, return_attention=True) also returns m
    [N, 1, H, W], not detached (ABN's visual explanation, or a loss on it); the module keeps no
    tensor of the step.

        >>> import torch, camfast
        >>> branch = camfast.nn.AttentionBranch(16, num_classes=10)
        >>> out, logits, m = branch(torch.randn(2, 16, 7, 7), return_attention=True)
        >>> out.shape, logits.shape, m.shape
        (torch.Size([2, 16, 7, 7]), torch.Size([2, 10]), torch.Size([2, 1, 7, 7]))
    """

    def __init__(self, in_channels: int, num_classes: int, body: nn.Module | None = None,
                 backend: str | None = None):
        super().__init__()
        self.body = body
        self.bn_att = nn.BatchNorm2d(in_channels)
        self.att_conv = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=False)
        self.bn_att2 = nn.BatchNorm2d(num_classes)
        self.att_conv2 = nn.Conv2d(num_classes, num_classes, kernel_size=1, bias=False)
        self.att_conv3 = nn.Conv2d(num_classes, 1, kernel_size=3, padding=1, bias=False)
        self.bn_att3 = nn.BatchNorm2d(1)
        self.backend = backend

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        h = self.bn_att(self.body(x) if self.body is not None else x)
        h = torch.relu(self.bn_att2(self.att_conv(h)))
        m = torch.sigmoid(self.bn_att3(self.att_conv3(h)))
        logits = self.att_conv2(h).mean(dim=(2, 3))
        out = ops.attention_branch_mix(x, m, backend=self.backend)
        return (out, logits, m) if return_attention else (out, logits)


class _SpatialSoftmaxBase(nn.Module):
    """The temperature of the spatial softmax modules: a float, or a learnable nn.Parameter.

    A learnable temperature gets its gradient from autograd through `x / temperature`; the op then
    runs with temperature 1, which is exact (softmax((x / T) / 1) = softmax(x / T)) and costs one
    elementwise pass. Nothing keeps a learnable temperature positive: that is the training's job.
    """

    def __init__(self, temperature: float, learnable: bool, backend: str | None):
        super().__init__()
        self.learnable = learnable
        self.backend = backend
        if learnable:
            self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        else:
            self.temperature = temperature

    def _scaled(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(input, temperature) for the op."""
        if self.learnable:
            return x / self.temperature.to(x.dtype), 1.0
        return x, self.temperature

    def extra_repr(self) -> str:
        value = float(self.temperature.detach()) if self.learnable else self.temperature
        return f"temperature={value}" + (", learnable=True" if self.learnable else "")


class SpatialSoftmax2d(_SpatialSoftmaxBase):
    """Softmax over the H*W values of each channel map of x / temperature: [N, C, H, W] in and out.

    See camfast.spatial_softmax2d. learnable=True makes the temperature an nn.Parameter.

    Example:
        >>> import torch, camfast
        >>> p = camfast.nn.SpatialSoftmax2d(temperature=0.5)(torch.randn(2, 3, 4, 4))
        >>> torch.allclose(p.sum((2, 3)), torch.ones(2, 3))   # each map sums to 1
        True
    """

    def __init__(self, temperature: float = 1.0, learnable: bool = False, backend: str | None = None):
        super().__init__(temperature, learnable, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, temperature = self._scaled(x)
        return ops.spatial_softmax2d(x, temperature, backend=self.backend)


class SpatialSoftArgmax2d(_SpatialSoftmaxBase):
    """Expected (x, y) keypoint of each channel map: [N, C, H, W] -> [N, C, 2].

    See camfast.spatial_soft_argmax2d. learnable=True makes the temperature an nn.Parameter.

    Example:
        >>> import torch, camfast
        >>> keypoints = camfast.nn.SpatialSoftArgmax2d(learnable=True)
        >>> keypoints(torch.randn(2, 3, 8, 8)).shape        # (x, y) per channel
        torch.Size([2, 3, 2])
        >>> [name for name, _ in keypoints.named_parameters()]
        ['temperature']
    """

    def __init__(self, temperature: float = 1.0, normalized_coordinates: bool = True, learnable: bool = False,
                 backend: str | None = None):
        super().__init__(temperature, learnable, backend)
        self.normalized_coordinates = normalized_coordinates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, temperature = self._scaled(x)
        return ops.spatial_soft_argmax2d(x, temperature, self.normalized_coordinates, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalized_coordinates={self.normalized_coordinates}"
