"""MaxBoxAcc (v1, v2), top-1 / GT-known localization and PxAP, as clovaai/wsolevaluation.

Both evaluators accumulate batches of score maps (`update`, or its older name `accumulate`) and
compute at the end. They are torchmetrics metrics when torchmetrics is installed: their states
(integer hit counts, histogram counts) are summed across processes by `compute`, so a dataset
sharded over torchrun's processes gives exactly the single-process numbers. BoxEvaluator's
backend="reference" runs the protocol's loop (camfast.wsol.reference: one OpenCV call per map and
threshold); "cpp" (the default when camfast._C is built) evaluates every threshold of a batch in
one pass and gives identical numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .. import _backend
from .._metric import Metric
from .._validation import check_bool
from . import reference
from .boxes import box_iou, contour_boxes, threshold_mask
from .scoremap import check_cam_thresholds, check_percentile, check_scoremaps, threshold_levels, to_uint8


def _check_backend(backend) -> str | None:
    if backend not in (None, "auto", "cpp", "reference"):
        raise ValueError(f"backend must be 'cpp', 'reference', None or 'auto' for camfast.wsol, got {backend!r}")
    return backend


def _resolve_backend(backend) -> str:
    return _backend.resolve(_check_backend(backend), torch.device("cpu"))


def _check_gt_boxes(gt_boxes, n: int) -> list[np.ndarray]:
    """A list of n int64 [G_i, 4] arrays with G_i >= 1 and valid inclusive corners, from such a
    list, a [n, G, 4] array, a [n, 4] array (one box per map) or, for one map, a [G, 4] array."""
    if isinstance(gt_boxes, (torch.Tensor, np.ndarray)):
        if np.ndim(gt_boxes) == 2 and len(gt_boxes) == n:
            gt_boxes = gt_boxes[:, None]
        gt_boxes = list(gt_boxes) if np.ndim(gt_boxes) == 3 else [gt_boxes]
    if not isinstance(gt_boxes, (list, tuple)) or len(gt_boxes) != n:
        raise ValueError(f"gt_boxes must hold one [G, 4] set of boxes per score map ({n}), got "
                         f"{len(gt_boxes) if isinstance(gt_boxes, (list, tuple)) else type(gt_boxes).__name__}")
    checked = []
    for boxes in gt_boxes:
        boxes = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
        if boxes.dtype.kind not in "iu" and not (boxes.dtype.kind == "f" and (boxes == np.floor(boxes)).all()):
            raise TypeError(f"gt_boxes must hold integer pixel coordinates, got {boxes.dtype}")
        boxes = boxes.astype(np.int64).reshape(-1, 4) if boxes.size % 4 == 0 else None
        if boxes is None or len(boxes) == 0:
            raise ValueError("gt_boxes must give at least one (x0, y0, x1, y1) box per score map")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any() or (boxes < 0).any():
            raise ValueError("gt_boxes must be (x0, y0, x1, y1) with 0 <= x0 <= x1 and 0 <= y0 <= y1")
        checked.append(boxes)
    return checked


def _check_correct(correct, n: int) -> np.ndarray | None:
    if correct is None:
        return None
    correct = correct.detach().cpu().numpy() if isinstance(correct, torch.Tensor) else np.asarray(correct)
    if correct.shape != (n,) or correct.dtype.kind not in "bui":
        raise ValueError(f"correct must be a boolean [N] = ({n},) vector, got {correct.dtype} {correct.shape}")
    return correct.astype(bool)


def _fast_best_iou(maps: np.ndarray, gt: list[np.ndarray], thresholds: np.ndarray, multi_contour: bool,
                   percentile: float) -> np.ndarray:
    """[N, T] best IoU per map and threshold from the union-find sweep over the 256 uint8 levels."""
    q = to_uint8(maps)
    levels = threshold_levels(q, thresholds, percentile)
    width = max(len(g) for g in gt)
    padded = np.zeros((len(gt), width, 4), dtype=np.int64)
    for i, g in enumerate(gt):
        padded[i, :len(g)] = g
    counts = torch.tensor([len(g) for g in gt], dtype=torch.int64)
    per_level, resolved = (t.numpy() for t in torch.ops.camfast.wsol_box_sweep(
        torch.from_numpy(q), torch.from_numpy(padded), counts, multi_contour))
    # Levels whose largest contour only cv2.contourArea can tell, and that some threshold uses.
    for i, level in zip(*np.nonzero(~resolved)):
        if (levels[i] == level).any():
            box = contour_boxes(threshold_mask(q[i], int(level)), multi_contour=False)
            per_level[i, level] = box_iou(box, gt[i]).max()
    return np.take_along_axis(per_level, levels, axis=1)


@dataclasses.dataclass  # not frozen: torchmetrics rebuilds results it returns
class BoxResult:
    """Box accuracies over the threshold sweep, in percent.

    Example:
        >>> import torch
        >>> from camfast.wsol import BoxEvaluator
        >>> scoremap = torch.zeros(32, 32, dtype=torch.float64)
        >>> scoremap[8:16, 4:20] = 1.0
        >>> evaluator = BoxEvaluator()
        >>> evaluator.accumulate(scoremap, [[4, 8, 20, 16]], correct=[True])
        >>> result = evaluator.compute()
        >>> result.value, result.max_box_acc, result.gt_known_loc, result.top1_loc
        (100.0, {30: 100.0, 50: 100.0, 70: 100.0}, 100.0, 100.0)
    """

    cam_thresholds: np.ndarray  # [T]
    iou_thresholds: tuple[int, ...]  # [D], percent
    gt_known_curve: np.ndarray  # [D, T]: maps whose best box has IoU >= delta
    top1_curve: np.ndarray | None  # [D, T]: the same and correctly classified (None without labels)
    multi_contour: bool

    @property
    def max_box_acc(self) -> dict[int, float]:
        """MaxBoxAcc at each IoU threshold: the accuracy at the best score threshold."""
        return {d: float(c.max()) for d, c in zip(self.iou_thresholds, self.gt_known_curve)}

    @property
    def value(self) -> float:
        """The protocol's headline number: the mean over IoU thresholds for v2, IoU 50 for v1."""
        accs = self.max_box_acc
        return float(np.mean(list(accs.values()))) if self.multi_contour else accs[self._delta]

    @property
    def _delta(self) -> int:
        return 50 if 50 in self.iou_thresholds else self.iou_thresholds[0]

    @property
    def best_threshold(self) -> float:
        """The score threshold with the best GT-known accuracy at IoU 50 (the first of ties)."""
        return float(self.cam_thresholds[self._curve_index()[1]])

    def _curve_index(self) -> tuple[int, int]:
        d = self.iou_thresholds.index(self._delta)
        return d, int(np.argmax(self.gt_known_curve[d]))

    @property
    def gt_known_loc(self) -> float:
        """GT-known localization accuracy (IoU >= 0.5) at best_threshold."""
        d, t = self._curve_index()
        return float(self.gt_known_curve[d, t])

    @property
    def top1_loc(self) -> float | None:
        """Top-1 localization accuracy (IoU >= 0.5 and correct class) at best_threshold."""
        if self.top1_curve is None:
            return None
        d, t = self._curve_index()
        return float(self.top1_curve[d, t])


class BoxEvaluator(Metric):
    """MaxBoxAcc over a sweep of score thresholds (clovaai/wsolevaluation's BoxEvaluator).

    version=2 (MaxBoxAccV2, the protocol's default) keeps every contour's box, holes included, and
    reports the mean over IoU thresholds 30/50/70; version=1 keeps the contour of largest area and
    reports IoU 50. Thresholds: np.arange(0, 1, cam_curve_interval) (1000 by default), or
    cam_thresholds. percentile=90 with cam_thresholds=[0.35] gives PaS (Bae et al.) at its
    threshold. Ground-truth boxes are inclusive (x0, y0, x1, y1) at the score maps' resolution
    (resize_boxes scales them as the protocol does).

    Example:
        >>> import torch
        >>> from camfast.wsol import BoxEvaluator
        >>> scoremaps = torch.zeros(2, 32, 32, dtype=torch.float64)
        >>> scoremaps[:, 8:16, 4:20] = 1.0                  # both maps light up the same rectangle
        >>> gt_boxes = [[[4, 8, 20, 16]], [[24, 24, 31, 31]]]   # only the first image's object is there
        >>> evaluator = BoxEvaluator(version=1)             # MaxBoxAcc (v1), IoU 50
        >>> evaluator.accumulate(scoremaps, gt_boxes)
        >>> evaluator.compute().value                       # percent of images localized
        50.0
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, version: int = 2, iou_thresholds=(30, 50, 70), cam_curve_interval: float = 0.001,
                 cam_thresholds=None, percentile: float = 100, backend: str | None = None):
        super().__init__()
        if version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {version!r}")
        thresholds = tuple(int(d) for d in iou_thresholds)
        if not thresholds or not all(0 < d <= 100 for d in thresholds):
            raise ValueError(f"iou_thresholds must be percentages in (0, 100], got {iou_thresholds!r}")
        self.multi_contour = version == 2
        self.iou_thresholds = thresholds
        self.cam_thresholds = check_cam_thresholds(cam_thresholds, cam_curve_interval)
        self.percentile = check_percentile(percentile)
        self.backend = _resolve_backend(backend)
        curve = torch.zeros(len(thresholds), len(self.cam_thresholds), dtype=torch.int64)
        self.add_state("hits", curve, dist_reduce_fx="sum")  # maps with IoU >= delta, per (delta, threshold)
        self.add_state("top1_hits", curve.clone(), dist_reduce_fx="sum")  # the same, correctly classified
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("unlabelled", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def best_iou(self, scoremaps, gt_boxes) -> np.ndarray:
        """[N, T] best IoU of the boxes at each threshold against each map's ground-truth boxes."""
        maps, _ = check_scoremaps(scoremaps)
        gt = _check_gt_boxes(gt_boxes, len(maps))
        if len(maps) == 0:
            return np.zeros((0, len(self.cam_thresholds)))
        if self.backend == "cpp":
            return _fast_best_iou(maps, gt, self.cam_thresholds, self.multi_contour, self.percentile)
        return np.stack([reference.best_iou_at_thresholds(m, g, self.cam_thresholds, self.multi_contour,
                                                          self.percentile) for m, g in zip(maps, gt)])

    def update(self, scoremaps, gt_boxes, correct=None) -> None:
        """Add score maps [N, H, W] (or one [H, W]) in [0, 1], their ground-truth boxes (a [G, 4]
        set per map, or [N, 4] for one box each) and, for top-1 localization, whether each map's
        image was classified right."""
        ious = self.best_iou(scoremaps, gt_boxes)
        correct = _check_correct(correct, len(ious))
        self.last_best_iou = ious  # [N, T] of this batch, for per-image reports (not a synced state)
        hit = ious[None] >= np.array(self.iou_thresholds)[:, None, None] / 100  # [D, N, T], non-strict
        self.hits += torch.from_numpy(hit.sum(axis=1))
        if correct is not None:
            self.top1_hits += torch.from_numpy((hit & correct[None, :, None]).sum(axis=1))
        else:
            self.unlabelled += len(ious)
        self.count += len(ious)

    accumulate = update  # the name before the evaluators became metrics

    def compute(self) -> BoxResult:
        count = int(self.count)
        if count == 0:
            raise RuntimeError("BoxEvaluator.compute: no score maps were accumulated")
        scale = 100.0 / float(count)
        top1 = self.top1_hits.numpy() * scale if int(self.unlabelled) == 0 else None
        return BoxResult(self.cam_thresholds, self.iou_thresholds, self.hits.numpy() * scale, top1,
                         self.multi_contour)


@dataclasses.dataclass
class MaskResult:
    """PxAP and the pixel precision-recall curve it is the area under.

    Example:
        >>> import torch
        >>> from camfast.wsol import MaskEvaluator
        >>> evaluator = MaskEvaluator()
        >>> evaluator.accumulate(torch.rand(2, 16, 16, dtype=torch.float64), torch.ones(2, 16, 16, dtype=torch.uint8))
        >>> result = evaluator.compute()
        >>> result.pxap, result.precision.shape == result.recall.shape
        (100.0, True)
    """

    pxap: float  # percent
    precision: np.ndarray  # [T + 3], from the highest bin edge down
    recall: np.ndarray


class MaskEvaluator(Metric):
    """PxAP: the area under the pixel precision-recall curve (clovaai/wsolevaluation's MaskEvaluator).

    Masks are 1 on the object, 0 on the background; any other value (the protocol uses 255 for the
    ignore region) is left out. Scores are binned on the float values with bin edges
    [t_0, ..., t_{T-1}, 1, 2, 3], so a pixel counts as positive at threshold t when score >= t.
    The histograms of a batch are taken in one NumPy pass over all its maps (`batched=True`), or
    map by map as the protocol does (`batched=False`, the reference); the counts are the same.

    Example:
        >>> import torch
        >>> from camfast.wsol import MaskEvaluator
        >>> scoremap = torch.zeros(32, 32, dtype=torch.float64)
        >>> scoremap[8:16, 4:20] = 1.0
        >>> evaluator = MaskEvaluator()
        >>> evaluator.accumulate(scoremap, (scoremap > 0.5).to(torch.uint8))   # the mask it predicts
        >>> evaluator.compute().pxap
        100.0
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, cam_curve_interval: float = 0.001, cam_thresholds=None, batched: bool = True):
        super().__init__()
        self.cam_thresholds = check_cam_thresholds(cam_thresholds, cam_curve_interval)
        self.bin_edges = np.append(self.cam_thresholds, [1.0, 2.0, 3.0])
        self.batched = check_bool(batched, "batched")
        bins = torch.zeros(len(self.bin_edges) - 1, dtype=torch.float64)  # counts, exact in float64
        self.add_state("foreground", bins, dist_reduce_fx="sum")
        self.add_state("background", bins.clone(), dist_reduce_fx="sum")

    def update(self, scoremaps, masks) -> None:
        """Add score maps [N, H, W] (or one [H, W]) in [0, 1] and their masks of the same shape."""
        maps, _ = check_scoremaps(scoremaps)
        masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        if masks.reshape(-1, *masks.shape[-2:]).shape != maps.shape or masks.dtype.kind not in "bui":
            raise ValueError(f"masks must be integer maps of the score maps' shape {maps.shape}, "
                             f"got {masks.dtype} {masks.shape}")
        masks = masks.reshape(maps.shape)
        # Batched: one histogram per class for the whole batch (the counts add up).
        pairs = [(maps, masks)] if self.batched else zip(maps, masks)
        for scoremaps, gt in pairs:
            fg, bg = reference.score_histograms(scoremaps, gt, self.bin_edges)
            self.foreground += torch.from_numpy(fg)
            self.background += torch.from_numpy(bg)

    accumulate = update  # the name before the evaluators became metrics

    def compute(self) -> MaskResult:
        """The protocol's AP: sum over bins of precision * recall increment, bins without
        predicted positives left out."""
        foreground, background = self.foreground.numpy(), self.background.numpy()
        tp = foreground[::-1].cumsum()
        fp = background[::-1].cumsum()
        fn = foreground.sum() - tp
        if ((tp + fn) <= 0).all():
            raise RuntimeError("MaskEvaluator.compute: no foreground pixel was accumulated")
        if ((tp + fp) <= 0).all():
            raise RuntimeError("MaskEvaluator.compute: no pixel was accumulated")
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        predicted = (tp + fp) != 0
        pxap = (precision[1:] * np.diff(recall))[predicted[1:]].sum() * 100
        return MaskResult(float(pxap), precision, recall)
