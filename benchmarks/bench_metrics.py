"""Faithfulness metrics and the dataset runner's MaxBoxAccV2: camfast against the peers, the floor.

Providers (each computes the same numbers; peers that are not installed are skipped):
  camfast      camfast.metrics with the preset or score that reproduces the peer
  torchcam     torchcam 0.5.0's ClassificationMetric / DeletionInsertionMetric, given the same maps
  grad-cam     grad-cam 1.5.7's CamMultImageConfidenceChange / ROADCombined (noise 0.01 on both sides)
  floor        the model forwards the metric needs, on the very inputs it scores, prepared
               beforehand (in chunks of the same size): no implementation can take less
  reference    MaxBoxAccV2 only: the protocol's loop (one OpenCV threshold + findContours per map
               and threshold) over 5,000 maps; "camfast" is BoxEvaluator fed in the runner's batches

The model is benchmarks.cam_models.BenchNet (ResNet-like, random weights; the small net at 64 x 64
for quick runs), the maps are smooth random CAMs at 7 x 7, resized by the metrics. Agreement with
the peers is checked once when the cases are built and printed (tests/test_metrics.py holds it to
its tolerance in CI).
"""

from __future__ import annotations

import numpy as np
import torch

from camfast import _extension
from camfast.metrics import average_drop_increase, deletion_insertion, road

from . import metric_peers, peers
from .cam_models import bench_net_and_image
from .harness import Case

CHUNK = 32  # perturbed inputs per forward, for camfast and torchcam alike
POOL_MAPS, RUNNER_MAPS, RUNNER_BATCH = 512, 5000, 64


def _data(quick: bool, n: int, device):
    model, image = bench_net_and_image(quick, device)
    g = torch.Generator().manual_seed(1)
    x = (image + 0.3 * torch.randn(n, *image.shape[1:], generator=g)).to(device)
    cams = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(7, 7), mode="bilinear")[:, 0]
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model.eval(), x, cams.to(device), targets


def _forwards(model, inputs):
    def run():
        with torch.inference_mode():  # as camfast and torchcam run them
            for batch in inputs:
                model(batch)
    return run


def _shape(x, cams) -> str:
    return f"{'x'.join(map(str, x.shape))} cams {'x'.join(map(str, cams.shape[1:]))}"


def _note(name: str, error: float, tolerance: float) -> None:
    print(f"  agreement {name}: max |difference| {error:.2e} (tolerance {tolerance:g})", flush=True)


def _average_drop_case(model, x, cams, targets) -> Case:
    big = torch.nn.functional.interpolate(cams[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]
    providers = {
        "camfast": lambda: average_drop_increase(model, x, cams, targets, score="logit", batch_size=CHUNK),
        "floor": _forwards(model, [*x.split(CHUNK), *(big[:, None] * x).split(CHUNK)]),
    }
    if peers.available("torchcam"):
        providers["torchcam"] = lambda: metric_peers.torchcam_average_drop(model, x, cams, targets)
        ours = average_drop_increase(model, x, cams, targets, score="logit")[0].mean().item()
        _note("average drop vs torchcam", abs(ours - providers["torchcam"]()["avg_drop"]), 1e-6)
    if peers.available("grad-cam"):
        providers["grad-cam"] = lambda: metric_peers.gradcam_confidence_change(model, x, big.cpu(), targets)
    return Case("metrics", "average_drop", _shape(x, cams), "float32", providers)


def _deletion_inputs(x, cams, steps: int = 20):
    """The inputs torchcam's deletion and insertion score (zero baseline), in its chunks of CHUNK:
    the images, then per image the deletions at counts 1..K and the insertions at counts 1..K-1."""
    pixels = x.shape[-2] * x.shape[-1]
    big = torch.nn.functional.interpolate(cams[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]
    order = big.flatten(1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(pixels).expand_as(order))
    step = -(-pixels // steps)
    counts = [*range(0, pixels, step), pixels]
    perturbed = []
    for image, rank in zip(x, ranks):
        top = [(rank < c).view(1, *x.shape[-2:]) for c in counts]
        perturbed += [image * ~t for t in top[1:]] + [image * t for t in top[1:-1]]
    return [*x.split(CHUNK), *torch.stack(perturbed).split(CHUNK)]


def _deletion_case(model, x, cams, targets) -> Case:
    providers = {
        "camfast": lambda: deletion_insertion(model, x, cams, targets, preset="torchcam", batch_size=CHUNK),
        "floor": _forwards(model, _deletion_inputs(x, cams)),
    }
    if peers.available("torchcam"):
        providers["torchcam"] = lambda: metric_peers.torchcam_deletion_insertion(model, x, cams, targets,
                                                                                 batch_size=CHUNK)
        ours = deletion_insertion(model, x, cams, targets, preset="torchcam", batch_size=CHUNK)
        peer = providers["torchcam"]()
        _note("deletion/insertion vs torchcam", max(abs(ours.deletion_auc.mean().item() - peer["deletion_auc"]),
                                                    abs(ours.insertion_auc.mean().item() - peer["insertion_auc"])),
              1e-6)
    return Case("metrics", "deletion_insertion[torchcam]", _shape(x, cams), "float32", providers)


def _road_case(model, x, cams, targets) -> Case:
    percentiles = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    big = torch.nn.functional.interpolate(cams[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]
    providers = {"camfast": lambda: road(model, x, cams, targets, percentiles=percentiles, batch_size=CHUNK)}
    if peers.available("grad-cam") and x.device.type == "cpu":
        providers["grad-cam"] = lambda: metric_peers.gradcam_road_combined(model, x, big, targets, percentiles)
        ours = road(model, x, big, targets, percentiles=percentiles, noise=0).value
        peer = metric_peers.gradcam_road(model, x, big, targets, percentiles)["combined"]
        _note("ROAD combined (noise 0) vs grad-cam", float(np.abs(ours.numpy() - peer).max()), 1e-4)
    # grad-cam's solves take about a minute a call: the first call and two more.
    return Case("metrics", "road_combined", _shape(x, cams), "float32", providers, min_calls=2)


def _runner_case(quick: bool) -> Case | None:
    """MaxBoxAccV2 over many 224 x 224 maps: the protocol's loop against the runner's batches."""
    from camfast.wsol import BoxEvaluator

    from .bench_wsol import cam_like_maps

    pool, total, size = (8, 16, 8) if quick else (POOL_MAPS, RUNNER_MAPS, RUNNER_BATCH)
    maps, boxes, _ = cam_like_maps(pool)
    batches = []  # the pool cycled: pool is a multiple of the batch size, so no batch wraps
    for start in range(0, total, size):
        p, k = start % pool, min(size, total - start)
        batches.append((maps[p:p + k], boxes[p:p + k]))

    def evaluate(backend):
        def run():
            evaluator = BoxEvaluator(backend=backend)
            for m, b in batches:
                evaluator.update(m, b)
            return evaluator.compute().value
        return run

    providers = {"reference": evaluate("reference"), "camfast": evaluate("cpp")}
    # The batches cycle the pool, so equal IoUs on the pool mean equal numbers on all the maps.
    same = np.array_equal(BoxEvaluator(backend="reference").best_iou(maps, boxes),
                          BoxEvaluator(backend="cpp").best_iou(maps, boxes))
    print(f"  runner MaxBoxAccV2 over {total} maps (a pool of {pool} cycled): identical IoUs = {same}", flush=True)
    # The protocol's loop takes minutes a call over 5,000 maps: the first call and one more.
    return Case("metrics", "runner_maxboxacc_v2", f"{total}x224x224x1000thr", "float64", providers, min_calls=1)


def cases(device: torch.device, quick: bool) -> list[Case]:
    n = 2 if quick else 16
    model, x, cams, targets = _data(quick, n, device)
    result = [_average_drop_case(model, x, cams, targets),
              _deletion_case(model, x[: max(2, n // 4)], cams[: max(2, n // 4)], targets[: max(2, n // 4)]),
              _road_case(model, x[: max(2, n // 4)], cams[: max(2, n // 4)], targets[: max(2, n // 4)])]
    if device.type == "cpu" and _extension.has_cpp("cpu"):
        result.append(_runner_case(quick))
    return result
