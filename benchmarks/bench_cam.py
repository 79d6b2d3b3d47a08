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
  camfast-layercam
               fully_cam only: camfast's LayerCAM with every conv as a target layer (every
               gradient from one autograd.grad call), beside FullyCAM's one-layer-at-a-time hooks
  camfast 10 calls
               "10 classes" cases: ten single-class calls, beside camfast's [N, 10] targets in one call

Cases: Score-CAM (three presets); Grad-CAM and Grad-CAM++ at layer4 and expand; each method of
the gradient family at layer4, 8 images (HiResCAM, element-wise, XGrad-CAM, LayerCAM, ShapleyCAM
with the ReST objective, FEM, Finer-CAM on the predicted classes); FullyCAM over every conv
against the peers' LayerCAM with the same 13 target layers; 10 classes per image.

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


def _family_cases(model, x, targets, layer) -> list[Case]:
    """The gradient family at one layer: camfast (default preset) beside each peer's own method."""
    module = dict(model.named_modules())[layer]
    predicted = model(x).argmax(1)
    g, t = peers.gradcam_explain, peers.torchcam_explain
    rows = [  # (op, camfast, grad-cam provider or None, torchcam provider or None)
        ("hires_cam", lambda: cc.HiResCAM(model, layer)(x, targets),
         lambda: g("HiResCAM", model, module, x, targets), None),
        ("grad_cam_elementwise", lambda: cc.GradCAMElementWise(model, layer)(x, targets),
         lambda: g("GradCAMElementWise", model, module, x, targets), None),
        ("xgrad_cam", lambda: cc.XGradCAM(model, layer)(x, targets),
         lambda: g("XGradCAM", model, module, x, targets), lambda: t("XGradCAM", model, layer, x, targets)),
        ("layer_cam", lambda: cc.LayerCAM(model, layer)(x, targets),
         lambda: g("LayerCAM", model, module, x, targets), lambda: t("LayerCAM", model, layer, x, targets)),
        ("shapley_cam[rest]", lambda: cc.ShapleyCAM(model, layer, objective="rest")(x, targets),
         lambda: g("ShapleyCAM", model, module, x, targets, objective="rest"), None),
        ("fem", lambda: cc.FEM(model, layer)(x, targets), lambda: g("FEM", model, module, x, targets), None),
        # The predicted classes: grad-cam applies its Finer-CAM objective only to those.
        ("finer_cam", lambda: cc.FinerCAM(model, layer)(x), lambda: peers.gradcam_finer(model, module, x),
         lambda: t("FinerCAM", model, layer, x, predicted)),
    ]
    label = _label(x, activation(model, layer, x))
    cases = []
    for op, ours, gradcam, torchcam in rows:
        providers = {"camfast": ours}
        if peers.available("grad-cam"):
            providers["grad-cam"] = gradcam
        if torchcam is not None and peers.available("torchcam"):
            providers["torchcam"] = torchcam
        cases.append(Case(op=op, mode="explain", shape=label, dtype="float32", providers=providers))
    return cases


def _fully_case(model, x, targets) -> Case:
    """FullyCAM over every conv against LayerCAM with the same target layers: grad-cam's (mean
    fusion, which FullyCAM's default reproduces), torchcam's (+ fuse_cams: tanh and max, the same
    work) and camfast's own LayerCAM, which takes every layer's gradient from one autograd.grad call."""
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    modules = [dict(model.named_modules())[name] for name in convs]
    providers = {"camfast": lambda: cc.FullyCAM(model)(x, targets),
                 "camfast-layercam": lambda: cc.LayerCAM(model, convs, preset="grad-cam")(x, targets)}
    if peers.available("grad-cam"):
        providers["grad-cam"] = lambda: peers.gradcam_explain("LayerCAM", model, modules, x, targets)
    if peers.available("torchcam"):
        providers["torchcam"] = lambda: peers.torchcam_explain("LayerCAM", model, convs, x, targets)
    return Case(op="fully_cam", mode="explain", shape=f"{'x'.join(map(str, x.shape))} @ {len(convs)} convs",
                dtype="float32", providers=providers)


def _classes_cases(model, x, targets, classes: int) -> list[Case]:
    """10 classes per image in one call against 10 single-class calls, camfast alone."""
    many = (targets[:, None] + torch.arange(10, device=x.device) * 37) % classes  # [N, 10]
    cases = []
    for op, explainer in (("grad_cam", cc.GradCAM(model, "layer4")), ("layer_cam", cc.LayerCAM(model, "layer4")),
                          ("fully_cam", cc.FullyCAM(model))):
        providers = {"camfast": lambda e=explainer: e(x, many),
                     "camfast 10 calls": lambda e=explainer: [e(x, many[:, t]) for t in range(10)]}
        cases.append(Case(op=f"{op} 10 classes", mode="explain", shape="x".join(map(str, x.shape)),
                          dtype="float32", providers=providers))
    return cases


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
    classes = model.fc.out_features
    return (result + _family_cases(model, xb, tb, "layer4") + [_fully_case(model, xb, tb)]
            + _classes_cases(model, xb, tb, classes))
