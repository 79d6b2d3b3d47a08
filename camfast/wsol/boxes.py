"""Boxes from score maps and their IoU, with the conventions of the WSOL protocol.

Boxes are (x0, y0, x1, y1) with inclusive corners. A thresholded map's boxes are the bounding
rectangles of its OpenCV contours (findContours, RETR_TREE: outer and hole contours), right and
bottom set to x + w and y + h clipped to W - 1 and H - 1; a map without contours gives the box
[0, 0, 0, 0]. Without multi_contour only the contour of largest cv2.contourArea is kept.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .scoremap import check_percentile, check_scoremaps, threshold_levels, to_uint8


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """[A, B] IoU of inclusive integer boxes, as the protocol's calculate_multiple_iou.

    Areas count pixels ((x1 - x0 + 1) * (y1 - y0 + 1)), the intersection is clamped at 0, and a
    union that is not positive gives IoU 0. Two [0, 0, 0, 0] boxes have IoU 1.

    Example:
        >>> from camfast.wsol import box_iou
        >>> box_iou([[0, 0, 9, 9]], [[0, 0, 9, 9], [5, 0, 14, 9]])   # 10x10 boxes; the second half-overlaps
        array([[1.        , 0.33333333]])
    """
    a = np.asarray(boxes_a, dtype=np.int64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, dtype=np.int64).reshape(1, -1, 4)
    ix = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    iy = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def resize_boxes(boxes, image_size, new_size=(224, 224)) -> np.ndarray:
    """Boxes of an image of (width, height) image_size, scaled to new_size and truncated to ints.

    Example:
        >>> from camfast.wsol import resize_boxes
        >>> resize_boxes([[10, 20, 110, 220]], image_size=(500, 400))   # a 500x400 image -> 224x224
        array([[  4,  11,  49, 123]])
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([new_size[0], new_size[1], new_size[0], new_size[1]], dtype=np.float64)
    size = np.array([image_size[0], image_size[1], image_size[0], image_size[1]], dtype=np.float64)
    return (boxes * scale / size).astype(np.int64)


def contour_boxes(mask: np.ndarray, multi_contour: bool) -> np.ndarray:
    """[K, 4] boxes of the contours of a binary uint8 mask (see the module docstring)."""
    height, width = mask.shape
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]  # the first of the largest, as Python's max
    boxes = np.empty((len(contours), 4), dtype=np.int64)
    for i, contour in enumerate(contours):
        x, y, w, h = cv2.boundingRect(contour)
        boxes[i] = (x, y, min(x + w, width - 1), min(y + h, height - 1))
    return boxes


def threshold_mask(q: np.ndarray, level: int) -> np.ndarray:
    """cv2.threshold(q, level, 255, THRESH_BINARY): 255 where q > level (strict), else 0."""
    return cv2.threshold(q, level, 255, cv2.THRESH_BINARY)[1]


def cam_to_boxes(scoremap, threshold: float, percentile: float = 100, multi_contour: bool = False):
    """Boxes of a score map at one threshold: LongTensor [K, 4] (a list of them for [N, H, W]).

    scoremap: [H, W] or [N, H, W] in [0, 1] (see normalize_cam). The map is cut at
    q > int(threshold * reference), q = uint8(255 * scoremap), the reference being max(q), or the
    given percentile of q for PaS (Bae et al.: percentile=90, threshold=0.35).

    Example:
        >>> import torch
        >>> from camfast.wsol import cam_to_boxes
        >>> scoremap = torch.zeros(32, 32, dtype=torch.float64)
        >>> scoremap[8:16, 4:20] = 1.0                      # one bright rectangle
        >>> cam_to_boxes(scoremap, 0.5)                     # (x0, y0, x1, y1)
        tensor([[ 4,  8, 20, 16]])
    """
    maps, single = check_scoremaps(scoremap, "scoremap")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    percentile = check_percentile(percentile)
    q = to_uint8(maps)
    levels = threshold_levels(q, np.array([float(threshold)]), percentile)[:, 0]
    boxes = [torch.from_numpy(contour_boxes(threshold_mask(m, int(k)), multi_contour)) for m, k in zip(q, levels)]
    return boxes[0] if single else boxes
