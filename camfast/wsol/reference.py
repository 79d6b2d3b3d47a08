"""The per-map, per-threshold loop of the WSOL protocol: the specification the fast paths match.

It follows clovaai/wsolevaluation's code structure (compute_bboxes_from_scoremaps, then
BoxEvaluator.accumulate's best IoU per threshold; MaskEvaluator's histograms per map), one
OpenCV threshold + findContours per map and threshold, and is never edited to fit a kernel.
"""

from __future__ import annotations

import numpy as np

from .boxes import box_iou, contour_boxes, threshold_mask
from .scoremap import to_uint8


def boxes_at_thresholds(scoremap: np.ndarray, cam_thresholds: np.ndarray, multi_contour: bool,
                        percentile: float = 100) -> list[np.ndarray]:
    """One [K_t, 4] array of boxes per threshold, for one float64 [H, W] map in [0, 1]."""
    q = to_uint8(scoremap)
    reference = np.max(q) if percentile == 100 else np.percentile(q, percentile)
    boxes = []
    for threshold in cam_thresholds:
        level = int(threshold * reference)
        boxes.append(contour_boxes(threshold_mask(q, level), multi_contour))
    return boxes


def best_iou_at_thresholds(scoremap: np.ndarray, gt_boxes: np.ndarray, cam_thresholds: np.ndarray,
                           multi_contour: bool, percentile: float = 100) -> np.ndarray:
    """[T] best IoU of any box at each threshold against any ground-truth box of the map."""
    per_threshold = boxes_at_thresholds(scoremap, cam_thresholds, multi_contour, percentile)
    ious = box_iou(np.concatenate(per_threshold), gt_boxes).max(axis=1)
    ends = np.cumsum([len(b) for b in per_threshold])
    return np.array([ious[end - len(b):end].max() for b, end in zip(per_threshold, ends)])


def score_histograms(scoremap: np.ndarray, mask: np.ndarray, bin_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of the scores on foreground (mask == 1) and background (mask == 0) pixels."""
    foreground, _ = np.histogram(scoremap[mask == 1], bins=bin_edges)
    background, _ = np.histogram(scoremap[mask == 0], bins=bin_edges)
    return foreground.astype(np.float64), background.astype(np.float64)
