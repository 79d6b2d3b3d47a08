"""WSOL in a minute on a CPU: `python -m camfast.wsol.demo` (or `make demo`).

Generates a seeded synthetic localization set (one object per image, its class is its shape, its
box is known), trains a tiny CNN three times (global average pooling, TAP, and ADL + GAP), and
evaluates the class activation maps of the ground-truth class with the WSOL protocol: MaxBoxAcc
(v1) and MaxBoxAccV2 over 1000 thresholds, and the box accuracy at the single threshold of
rethinkingCAM without PaS (0.2 of the maximum) and with PaS (0.35 of the 90th percentile), each
with and without negative weight clamping (NWC). Prints the table and writes a PNG of overlays.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import camfast

from .boxes import cam_to_boxes
from .evaluators import BoxEvaluator
from .scoremap import normalize_cam

SHAPES = ("square", "disk", "ring", "plus")


@dataclasses.dataclass
class Config:
    seed: int = 0
    image_size: int = 48
    train_images: int = 2048
    test_images: int = 256
    steps: int = 250
    batch_size: int = 32
    out: Path = Path("wsol_demo.png")
    cam_curve_interval: float = 0.001


# ---- data ---------------------------------------------------------------------------------

def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    r = np.hypot(yy, xx) / (size / 2)
    if kind == "square":
        return np.ones((size, size), bool)
    if kind == "disk":
        return r <= 1
    if kind == "ring":
        return (r <= 1) & (r >= rng.uniform(0.45, 0.6))
    bar = size // 3  # plus
    return (np.abs(yy) <= bar / 2) | (np.abs(xx) <= bar / 2)


def make_dataset(n: int, image_size: int, rng: np.random.Generator):
    """Images [n, 3, S, S], labels [n], inclusive boxes [n, 4] (x0, y0, x1, y1)."""
    images = rng.normal(0.0, 0.25, (n, 3, image_size, image_size)).astype(np.float32)
    labels = rng.integers(0, len(SHAPES), n)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for i, label in enumerate(labels):
        size = int(rng.integers(image_size // 3, 2 * image_size // 3 + 1))
        y0, x0 = rng.integers(0, image_size - size + 1, 2)
        mask = _shape_mask(SHAPES[label], size, rng)
        color = rng.uniform(0.5, 1.5, 3).astype(np.float32) * rng.choice([-1, 1])
        images[i, :, y0:y0 + size, x0:x0 + size] += mask * color[:, None, None]
        ys, xs = np.nonzero(mask)
        boxes[i] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max(), y0 + ys.max())
    return torch.from_numpy(images), torch.from_numpy(labels), boxes


# ---- model --------------------------------------------------------------------------------

class TinyNet(nn.Module):
    """Four 3x3 conv + batch-norm layers (feature map S/4), a pooling head and a linear classifier."""

    def __init__(self, pool: str, classes: int = len(SHAPES)):
        super().__init__()

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        adl = [camfast.nn.ADL(drop_rate=0.75, threshold=0.8)] if pool == "adl" else []
        self.features = nn.Sequential(*conv(3, 8), nn.MaxPool2d(2), *conv(8, 16), nn.MaxPool2d(2), *adl,
                                      *conv(16, 32), *adl, *conv(32, 32))
        self.pool = camfast.nn.ThresholdedAvgPool2d(0.1, flatten=True) if pool == "tap" else \
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)))

    @torch.no_grad()
    def cams(self, x: torch.Tensor, labels: torch.Tensor, nwc: bool):
        """Class activation maps of `labels` at feature resolution, and the logits.

        CAM = sum_k W[c, k] A_k, with W clamped to W+ = where(W > 0, W, 0) under NWC (the logits
        always use W).
        """
        features = self.features(x)
        weights = self.fc.weight
        if nwc:
            weights = torch.where(weights > 0, weights, torch.zeros_like(weights))
        cams = torch.einsum("nk,nkhw->nhw", weights[labels], features)
        return cams, self.fc(self.pool(features))


def train(model: nn.Module, images, labels, config: Config) -> float:
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(config.steps):
        batch = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


# ---- evaluation ---------------------------------------------------------------------------

# Columns: (name, evaluator arguments). The single-threshold columns follow rethinkingCAM's
# evaluation: 0.2 of the maximum without PaS, 0.35 of the 90th percentile with PaS.
def _columns(config: Config):
    return [
        ("MaxBoxAcc", dict(version=1, cam_curve_interval=config.cam_curve_interval)),
        ("MaxBoxAccV2", dict(version=2, cam_curve_interval=config.cam_curve_interval)),
        ("GT-known@0.2", dict(version=1, cam_thresholds=[0.2])),
        ("GT-known PaS", dict(version=1, cam_thresholds=[0.35], percentile=90)),
        ("Top-1 Loc PaS", dict(version=1, cam_thresholds=[0.35], percentile=90)),
    ]


def evaluate(model: TinyNet, images, labels, boxes, config: Config, nwc: bool) -> dict[str, float]:
    model.eval()
    cams, logits = model.cams(images, labels, nwc)
    scoremaps = normalize_cam(cams, (config.image_size, config.image_size))
    correct = (logits.argmax(1) == labels).numpy()
    row = {"top-1 cls": 100.0 * correct.mean()}
    for name, kwargs in _columns(config):
        evaluator = BoxEvaluator(**kwargs)
        evaluator.accumulate(scoremaps, boxes, correct)
        result = evaluator.compute()
        row[name] = result.top1_loc if name.startswith("Top-1") else result.value
    return row


def format_table(rows: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    return "\n".join(lines)


def save_overlays(models: dict[str, TinyNet], images, labels, boxes, config: Config, count: int = 6) -> None:
    """One row per model: images with the CAM (NWC) overlaid, the true box in green and the PaS
    box in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), count, figsize=(2 * count, 2.1 * len(models)), squeeze=False)
    shown = images[:count]
    picture = (shown - shown.amin((1, 2, 3), keepdim=True)) / (shown.amax((1, 2, 3), keepdim=True)
                                                               - shown.amin((1, 2, 3), keepdim=True))
    for row, (name, model) in enumerate(models.items()):
        model.eval()
        cams, _ = model.cams(shown, labels[:count], nwc=True)
        scoremaps = normalize_cam(cams, (config.image_size, config.image_size))
        for col in range(count):
            ax = axes[row, col]
            ax.imshow(picture[col].permute(1, 2, 0).numpy())
            ax.imshow(scoremaps[col].numpy(), cmap="jet", alpha=0.45)
            predicted = cam_to_boxes(scoremaps[col], 0.35, percentile=90)[0].tolist()
            for (x0, y0, x1, y1), color in ((boxes[col].tolist(), "lime"), (predicted, "red")):
                ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                           edgecolor=color, linewidth=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(SHAPES[int(labels[col])], fontsize=9)
    fig.tight_layout()
    fig.savefig(config.out, dpi=100)
    plt.close(fig)


def run(config: Config, log=print) -> dict[str, dict[str, float]]:
    """Train the three variants and return the table rows, keyed by model name."""
    rng = np.random.default_rng(config.seed)
    train_images, train_labels, _ = make_dataset(config.train_images, config.image_size, rng)
    test_images, test_labels, test_boxes = make_dataset(config.test_images, config.image_size, rng)
    pools = {"GAP": "gap", "TAP": "tap", "ADL": "adl"}
    rows, models = {}, {}
    for name, pool in pools.items():
        torch.manual_seed(config.seed)
        model = TinyNet(pool)
        start = time.perf_counter()
        loss = train(model, train_images, train_labels, config)
        log(f"trained {name}: {config.steps} steps in {time.perf_counter() - start:.1f} s, last loss {loss:.3f}")
        models[name] = model
        for nwc in (False, True):
            rows[name + (" + NWC" if nwc else "")] = evaluate(model, test_images, test_labels, test_boxes,
                                                                config, nwc)
    save_overlays(models, test_images, test_labels, test_boxes, config)
    return rows


def main(argv: list[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m camfast.wsol.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(Config):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    config = Config(**vars(parser.parse_args(argv)))
    rows = run(config)
    print()
    print(format_table(rows))
    print(f"\noverlays: {config.out} (green: true box, red: PaS box of the NWC CAM)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
