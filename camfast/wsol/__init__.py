"""Weakly-supervised object localization evaluation, as clovaai/wsolevaluation (CVPR 2020).

normalize_cam   CAM -> score map in [0, 1] (cubic resize in float64, min-max)
cam_to_boxes    boxes of a score map at one threshold (PaS: percentile=90, threshold=0.35)
box_iou         the protocol's inclusive IoU;  resize_boxes: its ground-truth box scaling
BoxEvaluator    MaxBoxAcc v1 / v2 over a threshold sweep, top-1 and GT-known localization
MaskEvaluator   PxAP
"""

from .boxes import box_iou, cam_to_boxes, resize_boxes
from .evaluators import BoxEvaluator, BoxResult, MaskEvaluator, MaskResult
from .scoremap import normalize_cam

__all__ = ["BoxEvaluator", "BoxResult", "MaskEvaluator", "MaskResult", "box_iou", "cam_to_boxes",
           "normalize_cam", "resize_boxes"]
