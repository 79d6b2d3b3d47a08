"""Test models built from camfast's layers, shared by the production tests (and importable by the
worker processes of the distributed test)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import camfast


def modules(backend: str | None = None) -> dict[str, nn.Module]:
    """One small instance of every module in camfast.nn, each taking x [N, 8, H, W]."""
    return {
        "ThresholdedAvgPool2d": camfast.nn.ThresholdedAvgPool2d(flatten=True, backend=backend),
        "ADL": camfast.nn.ADL(drop_rate=0.5, backend=backend),
        "ChannelSpatialAttention": camfast.nn.ChannelSpatialAttention(8, reduction=2, backend=backend),
        "AttentionBranch": camfast.nn.AttentionBranch(8, num_classes=3, backend=backend),
        "SpatialSoftmax2d": camfast.nn.SpatialSoftmax2d(temperature=0.5, learnable=True, backend=backend),
        "SpatialSoftArgmax2d": camfast.nn.SpatialSoftArgmax2d(temperature=2.0, learnable=True, backend=backend),
    }


def outputs(result) -> list[torch.Tensor]:
    """The tensors a module returned (one, or a tuple of them)."""
    return list(result) if isinstance(result, tuple) else [result]


def loss_of(result) -> torch.Tensor:
    """A scalar that reaches every output."""
    return sum(out.float().square().mean() for out in outputs(result))


class EveryLayer(nn.Module):
    """A small classifier through every camfast layer: images [N, 3, H, W] -> three outputs.

    Returns (logits [N, classes], the attention branch's logits [N, classes], the channel
    attention s [N, channels]); `loss` combines them as a training step would, the GGAM loss
    included. BatchNorm lives only in the attention branch.
    """

    def __init__(self, channels: int = 8, classes: int = 3, generator: torch.Generator | None = None,
                 backend: str | None = None):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.adl = camfast.nn.ADL(drop_rate=0.5, generator=generator, backend=backend)
        self.csa = camfast.nn.ChannelSpatialAttention(channels, reduction=2, backend=backend)
        self.branch = camfast.nn.AttentionBranch(channels, classes, backend=backend)
        self.softmax = camfast.nn.SpatialSoftmax2d(temperature=0.5, learnable=True, backend=backend)
        self.keypoints = camfast.nn.SpatialSoftArgmax2d(backend=backend)
        self.pool = camfast.nn.ThresholdedAvgPool2d(flatten=True, backend=backend)
        self.head = nn.Linear(3 * channels, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.adl(torch.relu(self.stem(x)))
        h, s = self.csa(h, return_attention=True)
        h, branch_logits = self.branch(h)
        features = torch.cat((self.pool(h * self.softmax(h)), self.keypoints(h).flatten(1)), dim=1)
        return self.head(features), branch_logits, s

    def loss(self, result, labels: torch.Tensor) -> torch.Tensor:
        """Both cross-entropies plus the GGAM loss, as a training step combines them.

        The GGAM target is the head's weights for each label's class (the authors take Grad-CAM
        weights, which needs a second autograd pass; ggam_loss detaches its target either way).
        ggam_loss sums over the batch; it is divided by N here so that every term is a batch
        mean, and the mean of two half-batch losses is the loss of the whole batch.
        """
        logits, branch_logits, s = result
        target = self.head.weight[labels, : s.shape[1]].to(s.dtype)
        ggam = camfast.ggam_loss(s, target) / s.shape[0]
        return F.cross_entropy(logits, labels) + F.cross_entropy(branch_logits, labels) + ggam
