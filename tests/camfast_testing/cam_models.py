"""The two small architectures the explainers are checked on against the peer libraries."""

from __future__ import annotations

import torch
from torch import nn


class PlainNet(nn.Module):
    """conv-activation-pool stacks (no BN, no skip), GAP, fc: the CAM paper's shape.

    `activation`: ReLU by default; a smooth one (GELU) makes the class score curved in every
    layer, which second-order methods (ShapleyCAM) need to differ from first-order ones.
    """

    def __init__(self, classes: int = 12, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), activation(), nn.MaxPool2d(2),
            nn.Conv2d(16, 24, 3, padding=1), activation(), nn.MaxPool2d(2),
            nn.Conv2d(24, 32, 3, padding=1), activation())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)
        with torch.no_grad():
            self.fc.weight.mul_(20)
        self.eval()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def resnet() -> nn.Module:
    """A small residual net with BatchNorm and in-place ReLU (the benchmark's BenchNet, narrow)."""
    from benchmarks.cam_models import BenchNet

    return BenchNet(widths=(8, 16, 32, 48), expand=64, classes=20)
