"""WSOL evaluation: the batched sweep of camfast.wsol vs the protocol's per-map, per-threshold loop.

One case per metric on a batch of CAM-like score maps (14 x 14 maps of a few bumps plus noise,
resized to 224 x 224 and normalised as the protocol does), 1000 thresholds. The providers are the
evaluators' paths: "reference" is one OpenCV threshold + findContours per map and threshold, or one
histogram per map (clovaai/wsolevaluation's loop), "cpp" the union-find sweep (boxes), "batched"
one NumPy histogram pass over the batch (PxAP).
The score maps are prepared once, outside the timed calls, as both providers take them ready.
"""

from __future__ import annotations

import numpy as np
import torch

from camfast import _extension

from .harness import Case

FULL_MAPS, QUICK_MAPS = 128, 4
SIZE = 224


def cam_like_maps(n: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """n score maps at 224 x 224, one ground-truth box each, and ground-truth masks."""
    from camfast.wsol import normalize_cam

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:14, 0:14]
    cams = np.zeros((n, 14, 14))
    for cam in cams:  # a main object and a few weaker distractors, as trained CAMs show
        for strength in (1.0, *rng.uniform(0.2, 0.7, rng.integers(1, 4))):
            cy, cx, sy, sx = rng.uniform(2, 12), rng.uniform(2, 12), rng.uniform(1, 3), rng.uniform(1, 3)
            cam += strength * np.exp(-((yy - cy) / sy) ** 2 - ((xx - cx) / sx) ** 2)
    cams += 0.05 * rng.standard_normal(cams.shape)
    maps = normalize_cam(cams, (SIZE, SIZE)).numpy()
    boxes, masks = [], maps > 0.5
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append(np.array([[xs.min(), ys.min(), xs.max(), ys.max()]]))
    return maps, boxes, masks.astype(np.uint8)


def _box_call(version: int, backend: str, maps, boxes):
    from camfast.wsol import BoxEvaluator

    def call():
        evaluator = BoxEvaluator(version=version, backend=backend)
        evaluator.accumulate(maps, boxes)
        return evaluator.compute()

    return call


def _mask_call(batched: bool, maps, masks):
    from camfast.wsol import MaskEvaluator

    def call():
        evaluator = MaskEvaluator(batched=batched)
        evaluator.accumulate(maps, masks)
        return evaluator.compute()

    return call


def cases(device: torch.device, quick: bool):
    # The protocol runs on the CPU whatever device made the maps, and needs OpenCV.
    if device.type != "cpu" or not _extension.has_cpp("cpu"):
        return []
    try:
        import cv2  # noqa: F401
    except ImportError:
        return []
    n = QUICK_MAPS if quick else FULL_MAPS
    maps, boxes, masks = cam_like_maps(n)
    shape = f"{n}x{SIZE}x{SIZE}x1000thr"
    backends = ("reference", "cpp")
    return [
        Case("wsol", "maxboxacc_v2", shape, "float64", {b: _box_call(2, b, maps, boxes) for b in backends}),
        Case("wsol", "maxboxacc_v1", shape, "float64", {b: _box_call(1, b, maps, boxes) for b in backends}),
        Case("wsol", "pxap", shape, "float64", {"reference": _mask_call(False, maps, masks),
                                                 "batched": _mask_call(True, maps, masks)}),
    ]
