"""Ablation-CAM, EigenCAM and several classes per image: camfast against grad-cam 1.5.7, with floors.

Model: benchmarks.cam_models.BenchNet at 224 x 224 ("layer3": 128 maps at 14 x 14; "layer4": 256
at 7 x 7; "expand": 2048 at 7 x 7, feeding global average pooling and the classifier).

camfast's explainers are built once per case and called repeatedly, as an application would:
AblationCAM traces the model with torch.fx on its first call (tens of milliseconds), which the
harness's warm-up call absorbs. grad-cam's objects are built per call (their hooks copy every
activation to the host and would slow the other providers down).

Cases and providers:
  ablation_cam layer3, 8 images
    camfast         AblationCAM with the model split at the layer (torch.fx): only layer4 and the
                    head run for the ablated copies
    camfast-model   AblationCAM(split=False): the whole model runs for every ablated copy, as in
                    grad-cam
    floor           the clean forward plus bare forwards of the part after the layer on the very
                    ablated activations camfast scores, prepared beforehand, in batches of 32
    floor-model     the clean forward plus bare whole-model forwards of the same number of images
                    in batches of 32: the least any explainer without a split can take
    grad-cam        its AblationCAM (batch 32, the whole model per copy)
  ablation_cam expand (GAP head), 1 image: camfast takes the exact shortcut (no forward but the
    clean one); camfast-fx forwards every copy through the split; grad-cam forwards 2048 copies
    through the whole model (one image only: grad-cam's time is linear in the images, it loops
    over them, and 8 would take most of an hour on a 2-core CPU)
  eigen_cam layer4 / expand, 8 images: camfast, grad-cam, floor (one forward without autograd)
  classes: ScoreCAM (torchcam preset, layer4) and AblationCAM (layer3) on 1 image, 1 class
    against 10 classes per image in one call
"""

from __future__ import annotations

import torch

import camfast.cam as cc
from camfast.cam._split import split_model

from . import peers
from .cam_models import activation, bench_net_and_image
from .harness import Case

CHUNK = 32  # ablated copies per forward, camfast and grad-cam alike (grad-cam's default)


def _label(x, act) -> str:
    return f"{'x'.join(map(str, x.shape))} @ {'x'.join(map(str, act.shape[1:]))}"


def _ablation_floors(model, layer: str, x):
    """(split floor, whole-model floor): the forwards AblationCAM needs, prepared outside the timing."""
    act = activation(model, layer, x)
    n, k = act.shape[:2]
    todo = (act.flatten(2).amax(2) > 0).flatten().nonzero()[:, 0]  # camfast skips all-zero channels
    owner, channel = torch.div(todo, k, rounding_mode="floor"), todo % k
    copies = act[owner]
    copies[torch.arange(len(todo)), channel] = 0
    with torch.no_grad():
        split = split_model(model, dict(model.named_modules())[layer])[0]
    batches, images = list(copies.split(CHUNK)), list(owner.split(CHUNK))

    def split_floor():
        with torch.no_grad():
            model(x)
            for batch in batches:
                split.suffix(batch)

    def model_floor():
        with torch.no_grad():
            model(x)
            for rows in images:
                model(x.index_select(0, rows))

    return split_floor, model_floor


def _ablation_case(model, x, targets, layer: str) -> Case:
    module = dict(model.named_modules())[layer]
    split_floor, model_floor = _ablation_floors(model, layer, x)
    split = cc.AblationCAM(model, layer, batch_size=CHUNK)
    whole = cc.AblationCAM(model, layer, batch_size=CHUNK, split=False)
    providers = {
        "camfast": lambda: split(x, targets),
        "camfast-model": lambda: whole(x, targets),
        "floor": split_floor,
        "floor-model": model_floor,
    }
    if peers.available("grad-cam"):
        providers["grad-cam"] = lambda: peers.gradcam_explain("AblationCAM", model, module, x, targets, CHUNK)
    return Case(op="ablation_cam", mode="explain", shape=_label(x, activation(model, layer, x)), dtype="float32",
                providers=providers, min_calls=1)


def _gap_case(model, x, targets, layer: str) -> Case:
    module = dict(model.named_modules())[layer]

    def floor():
        with torch.no_grad():
            model(x)

    shortcut, forwarded = cc.AblationCAM(model, layer), cc.AblationCAM(model, layer, batch_size=CHUNK, fast=False)
    providers = {
        "camfast": lambda: shortcut(x, targets),
        "camfast-fx": lambda: forwarded(x, targets),
        "floor": floor,
    }
    if peers.available("grad-cam"):
        providers["grad-cam"] = lambda: peers.gradcam_explain("AblationCAM", model, module, x, targets, CHUNK)
    return Case(op="ablation_cam[gap-head]", mode="explain", shape=_label(x, activation(model, layer, x)),
                dtype="float32", providers=providers, min_calls=1)


def _eigen_case(model, x, targets, layer: str) -> Case:
    module = dict(model.named_modules())[layer]

    def floor():
        with torch.no_grad():
            model(x)

    providers = {"camfast": lambda: cc.EigenCAM(model, layer)(x, targets), "floor": floor}
    if peers.available("grad-cam"):
        providers["grad-cam"] = lambda: peers.gradcam_explain("EigenCAM", model, module, x, targets)
    return Case(op="eigen_cam", mode="explain", shape=_label(x, activation(model, layer, x)), dtype="float32",
                providers=providers)


def _classes_cases(model, x, classes: int) -> list[Case]:
    one = torch.arange(x.shape[0])[:, None] * 7 % classes
    many = (one + torch.arange(10) * 97) % classes  # [N, 10]
    cases = []
    for op, layer, explainer in (("score_cam[torchcam]", "layer4", cc.ScoreCAM(model, "layer4", preset="torchcam")),
                                 ("ablation_cam", "layer3", cc.AblationCAM(model, "layer3", batch_size=CHUNK))):
        providers = {"camfast T=1": lambda e=explainer: e(x, one), "camfast T=10": lambda e=explainer: e(x, many)}
        cases.append(Case(op=f"{op} classes", mode="explain", shape=_label(x, activation(model, layer, x)),
                          dtype="float32", providers=providers))
    return cases


def cases(device: torch.device, quick: bool) -> list[Case]:
    model, image = bench_net_and_image(quick, device)
    size = image.shape[-1]
    xb = torch.rand(8, 3, size, size, device=device)
    tb = torch.arange(8, device=device) * (100 if not quick else 1)
    target = model(image).argmax(1).detach()
    classes = model.fc.out_features
    return ([_ablation_case(model, xb, tb, "layer3"), _gap_case(model, image, target, "expand")]
            + [_eigen_case(model, xb, tb, layer) for layer in ("layer4", "expand")]
            + _classes_cases(model, image, classes))
