"""CAM explainers: camfast against grad-cam 1.5.7, torchcam 0.5.0 and captum 0.9.0, with the floor.

Providers of a case (each computes the same maps; peers that are not installed are skipped):
  camfast      the camfast.cam explainer, with the preset or variant that reproduces the peers
  grad-cam, torchcam, captum
               the peer library's own method, run as its users run it (objects created per call,
               so their hooks never slow down the other providers); batch size 16 for every
               Score-CAM, so that all of them forward batches of the same size
  floor        Score-CAM only: the forward passes Score-CAM needs (the image batch, one masked
               image per non-constant map, one zero image when constant maps are scored), run as
               bare model forwards of the same batches of the same masked images, prepared
               beforehand: no explainer can take less
  reference    Score-CAM only: camfast's plain algorithm (fast=False): every map forwarded,
               constant ones included, masks from the reference op; the speed-up column of the
               other providers is measured against it. Gradient methods have no reference: their
               rows compare camfast with the peers directly

The model is ResNet-like with random weights: "layer4" gives 256 maps at 7x7 and "expand" (a 1x1
conv, as in ResNet-50's last block) 2048 maps at 7x7 for a 224x224 input. BN scales and shifts are
drawn at random (shift mean 0.2), which leaves 41 of the 256 layer4 maps and 537 of the 2048 expand
maps all zero after the ReLU on the benchmark image, as dead channels do in trained ResNets (the
peers study's random net had 41 of 256 too); the classifier's weights are scaled by 10 so that the
logits have a standard deviation near 3 (with default init they are nearly flat, every Score-CAM
channel weight is about 1/K and all methods agree trivially).
`make bench` also writes benchmarks/out/cam_methods_<device>.png: the methods side by side on one image.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import camfast
import camfast.cam as cc

from . import peers
from .harness import Case

BATCH = 16  # masked images per forward, for camfast and the peers alike
OUT_DIR = Path(__file__).parent / "out"


class _Block(nn.Module):
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
    """stem (/4) -> layer1..layer4 (/32 overall) -> expand (1x1 conv) -> GAP -> fc."""

    def __init__(self, widths=(32, 64, 128, 256), expand: int = 2048, classes: int = 1000,
                 fc_gain: float = 10.0, bn_shift: float = 0.2):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w1, 7, 2, 3, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = _Block(w1, w1, 1)
        self.layer2 = _Block(w1, w2, 2)
        self.layer3 = _Block(w2, w3, 2)
        self.layer4 = _Block(w3, w4, 2)
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


def _activation(model, layer: str, x) -> torch.Tensor:
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(a=o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return store["a"]


def _floor(model, x, act, preset: str):
    """The forwards Score-CAM needs, on the very inputs it scores, prepared outside the timing.

    The image batch, the masked images of the non-constant maps in batches of BATCH (as camfast
    chunks them), and one zero image when constant maps are scored. The inputs are the real masked
    images because a CPU forward's time depends on the data: on random images it is about 10 %
    slower than on masked ones (denser activations after each ReLU).
    """
    flags = cc.PRESETS[preset]
    flat = act.flatten(0, 1)[:, None]
    constant = flat.amax((1, 2, 3)) == flat.amin((1, 2, 3))
    todo = (~constant).nonzero()[:, 0]
    owner = torch.div(todo, act.shape[1], rounding_mode="floor")
    masked = camfast.score_cam_masks(flat[todo], x[owner], align_corners=flags["align_corners"],
                                     normalize_stage=flags["normalize_stage"])[:, 0]
    inputs = list(masked.split(BATCH))
    if constant.any() and not flags["skip_constant"]:
        inputs.append(torch.zeros_like(x[:1]))

    def run():
        with torch.no_grad():
            model(x)
            for batch in inputs:
                model(batch)

    return run


def _label(x, act) -> str:
    return f"{'x'.join(map(str, x.shape))} @ {'x'.join(map(str, act.shape[1:]))}"


def _score_cases(model, x, targets, layer) -> list[Case]:
    act = _activation(model, layer, x)
    constant = int((act.amax((2, 3)) == act.amin((2, 3))).sum())
    module = dict(model.named_modules())[layer]
    cases = []
    for preset in ("official", "torchcam", "grad-cam"):
        providers = {
            "camfast": lambda p=preset: cc.ScoreCAM(model, layer, preset=p, batch_size=BATCH)(x, targets),
            "floor": _floor(model, x, act, preset),
            "reference": lambda p=preset: cc.ScoreCAM(model, layer, preset=p, batch_size=BATCH, fast=False)(x, targets),
        }
        if preset == "torchcam" and peers.available("torchcam"):
            providers["torchcam"] = lambda: peers.torchcam_explain("ScoreCAM", model, layer, x, targets, batch_size=BATCH)
        if preset == "grad-cam" and peers.available("grad-cam"):
            providers["grad-cam"] = lambda: peers.gradcam_explain("ScoreCAM", model, module, x, targets, BATCH)
        cases.append(Case(op=f"score_cam[{preset}]", mode="explain", shape=_label(x, act), dtype="float32",
                          providers=providers))
    print(f"  score_cam {_label(x, act)}: {constant} of {act.shape[0] * act.shape[1]} maps constant")
    return cases


def _gradient_cases(model, x, targets, layer) -> list[Case]:
    module = dict(model.named_modules())[layer]
    grad = {"camfast": lambda: cc.GradCAM(model, layer)(x, targets)}
    plus = {"camfast": lambda: cc.GradCAMPlusPlus(model, layer, variant="grad-cam")(x, targets)}
    if peers.available("grad-cam"):
        grad["grad-cam"] = lambda: peers.gradcam_explain("GradCAM", model, module, x, targets)
        plus["grad-cam"] = lambda: peers.gradcam_explain("GradCAMPlusPlus", model, module, x, targets)
    if peers.available("torchcam"):  # torchcam's Grad-CAM++ computes another map (SPEC 2): not compared
        grad["torchcam"] = lambda: peers.torchcam_explain("GradCAM", model, layer, x, targets)
    if peers.available("captum"):
        grad["captum"] = lambda: peers.captum_gradcam(model, module, x, targets)
    label = _label(x, _activation(model, layer, x))
    return [Case(op="grad_cam", mode="explain", shape=label, dtype="float32", providers=grad),
            Case(op="grad_cam_pp[grad-cam]", mode="explain", shape=label, dtype="float32", providers=plus)]


def method_grid(model, x, targets, layer: str, path: Path) -> None:
    """One image, one row per method: camfast's overlay, the peer's, and |difference|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cam_peer_check import _as_input_maps

    module = dict(model.named_modules())[layer]
    rows = [
        ("CAM (expand)", cc.CAM(model, "expand"),
         ("torchcam", lambda: peers.torchcam_explain("CAM", model, "expand", x, targets, fc_layer="fc"))),
        ("Grad-CAM", cc.GradCAM(model, layer),
         ("grad-cam", lambda: peers.gradcam_explain("GradCAM", model, module, x, targets))),
        ("Grad-CAM++ (grad-cam)", cc.GradCAMPlusPlus(model, layer, variant="grad-cam"),
         ("grad-cam", lambda: peers.gradcam_explain("GradCAMPlusPlus", model, module, x, targets))),
        ("Grad-CAM++ (official)", cc.GradCAMPlusPlus(model, layer), None),
        ("Score-CAM (official)", cc.ScoreCAM(model, layer), None),
        ("Score-CAM (torchcam)", cc.ScoreCAM(model, layer, preset="torchcam"),
         ("torchcam", lambda: peers.torchcam_explain("ScoreCAM", model, layer, x, targets))),
        ("Score-CAM (grad-cam)", cc.ScoreCAM(model, layer, preset="grad-cam"),
         ("grad-cam", lambda: peers.gradcam_explain("ScoreCAM", model, module, x, targets))),
        ("IS-CAM (3 steps)", cc.ISCAM(model, layer, num_samples=3), None),
    ]
    image = x[:1].cpu()
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.4 * len(rows)))
    for ax_row, (name, explainer, peer) in zip(axes, rows):
        ours = explainer(x[:1], targets[:1]).cpu()
        ax_row[0].imshow(cc.overlay(image[0], ours[0]).permute(1, 2, 0).numpy())
        ax_row[0].set_title(f"camfast {name}", fontsize=8)
        if peer is not None and peers.available(peer[0]):
            theirs = _as_input_maps(peer[1]().cpu()[:1], ours.shape[-2:])
            ax_row[1].imshow(cc.overlay(image[0], theirs[0]).permute(1, 2, 0).numpy())
            ax_row[1].set_title(peer[0], fontsize=8)
            ax_row[2].imshow((ours[0] - theirs[0]).abs().numpy(), cmap="gray", vmin=0, vmax=0.05)
            ax_row[2].set_title("|difference| (black 0, white 0.05)", fontsize=8)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"  methods side by side: {path}")


def _image(size: int, device) -> torch.Tensor:
    """A smooth synthetic scene (two blobs on a gradient), so the overlays are readable."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    blob = lambda cy, cx, r: torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / r)  # noqa: E731
    img = torch.stack([0.3 + 0.6 * blob(0.35, 0.3, 0.02), 0.2 + 0.3 * xs, 0.3 + 0.6 * blob(0.7, 0.7, 0.03)])
    return img.clamp(0, 1).to(device)


def cases(device: torch.device, quick: bool) -> list[Case]:
    torch.manual_seed(0)
    widths, expand, size = ((8, 8, 16, 32), 64, 64) if quick else ((32, 64, 128, 256), 2048, 224)
    model = BenchNet(widths, expand).to(device)
    x = _image(size, device)[None]
    targets = model(x).argmax(1).detach()
    result = _score_cases(model, x, targets, "layer4")
    if device.type == "cuda" and not quick:
        x8 = torch.rand(8, 3, size, size, device=device)
        t8 = torch.arange(8, device=device) * 100
        result += _score_cases(model, x8, t8, "layer4") + _score_cases(model, x, targets, "expand")
    xb = torch.rand(8, 3, size, size, device=device)
    tb = torch.arange(8, device=device) * (100 if not quick else 1)
    for layer in ("layer4", "expand"):
        result += _gradient_cases(model, xb, tb, layer)
    if not quick:
        method_grid(model, x, targets, "layer4", OUT_DIR / f"cam_methods_{device.type}.png")
    return result
