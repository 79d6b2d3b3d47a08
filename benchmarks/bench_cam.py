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

The model is benchmarks.cam_models.BenchNet, ResNet-like with random weights: "layer4" gives 256
maps at 7x7 and "expand" (a 1x1 conv, as in ResNet-50's last block) 2048 maps at 7x7 for a 224x224
input. Its random BN shifts leave 41 of the 256 layer4 maps and 537 of the 2048 expand maps all
zero after the ReLU on the benchmark image, as dead channels do in trained ResNets, and its scaled
classifier spreads the logits (standard deviation near 3), so the methods do not agree trivially.
The methods side by side on one image are drawn by `python -m benchmarks.cam_peer_check`.
"""

from __future__ import annotations

import torch

import camfast
import camfast.cam as cc

from . import peers
from .cam_models import activation, bench_net_and_image
from .harness import Case

BATCH = 16  # masked images per forward, for camfast and the peers alike


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
    act = activation(model, layer, x)
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
    # torchcam's Grad-CAM++ is left out: its alpha normalisation is applied to a copy and has no
    # effect, so it computes another map (see camfast.cam.GradCAMPlusPlus).
    if peers.available("torchcam"):
        grad["torchcam"] = lambda: peers.torchcam_explain("GradCAM", model, layer, x, targets)
    if peers.available("captum"):
        grad["captum"] = lambda: peers.captum_gradcam(model, module, x, targets)
    label = _label(x, activation(model, layer, x))
    return [Case(op="grad_cam", mode="explain", shape=label, dtype="float32", providers=grad),
            Case(op="grad_cam_pp[grad-cam]", mode="explain", shape=label, dtype="float32", providers=plus)]


def cases(device: torch.device, quick: bool) -> list[Case]:
    model, x = bench_net_and_image(quick, device)
    size = x.shape[-1]
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
    return result
