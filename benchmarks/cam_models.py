"""Models and inputs shared by the explainer benchmarks, the peer check and the tests.

No weights are downloaded: every model is built here with random weights, shaped like the
networks the explainers are used on.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """A ResNet basic block: two 3x3 convs with batch norm, and a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.down is None else self.down(x)))


class BenchNet(nn.Module):
    """stem (/4) -> layer1..layer4 (/32 overall) -> expand (1x1 conv) -> GAP -> fc.

    "layer4" gives `widths[-1]` maps and "expand" (a 1x1 conv, as in ResNet-50's last block)
    `expand` maps, both at 7x7 for a 224x224 input. BN scales and shifts are drawn at random
    (shift mean `bn_shift`), which leaves some maps all zero after the ReLU, as dead channels do in
    trained ResNets; the classifier's weights are scaled by `fc_gain` so that the logits are spread
    (with default init they are nearly flat, and every explainer agrees trivially).
    """

    def __init__(self, widths=(32, 64, 128, 256), expand: int = 2048, classes: int = 1000,
                 fc_gain: float = 10.0, bn_shift: float = 0.2):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w1, 7, 2, 3, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = Block(w1, w1, 1)
        self.layer2 = Block(w1, w2, 2)
        self.layer3 = Block(w2, w3, 2)
        self.layer4 = Block(w3, w4, 2)
        self.expand = nn.Sequential(nn.Conv2d(w4, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(expand, classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(bn_shift, 0.3)
            self.fc.weight.mul_(fc_gain)
        self.eval()

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(self.expand(x)).flatten(1))


def activation(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of `model`'s submodule `layer` on `x` (no gradient)."""
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(a=o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store["a"]


def synthetic_image(size: int, device="cpu") -> torch.Tensor:
    """A smooth synthetic scene [3, size, size] (two blobs on a gradient), so overlays are readable."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    blob = lambda cy, cx, r: torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / r)  # noqa: E731
    img = torch.stack([0.3 + 0.6 * blob(0.35, 0.3, 0.02), 0.2 + 0.3 * xs, 0.3 + 0.6 * blob(0.7, 0.7, 0.03)])
    return img.clamp(0, 1).to(device)


def bench_net_and_image(quick: bool, device="cpu") -> tuple[BenchNet, torch.Tensor]:
    """The explainer benchmark's model and image [1, 3, S, S]: ResNet-50-like widths at 224x224,
    or a small net at 64x64 for quick runs. Seeds torch first, so every caller gets the same net."""
    torch.manual_seed(0)
    widths, expand, size = ((8, 8, 16, 32), 64, 64) if quick else ((32, 64, 128, 256), 2048, 224)
    return BenchNet(widths, expand).to(device), synthetic_image(size, device)[None]
