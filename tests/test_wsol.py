"""camfast.wsol against the WSOL protocol (clovaai/wsolevaluation): its own unit cases with
hand-computed values, and the batched sweep against the per-map, per-threshold OpenCV loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from camfast import _extension  # noqa: E402
from camfast.wsol import (BoxEvaluator, MaskEvaluator, box_iou, cam_to_boxes, normalize_cam,  # noqa: E402
                          resize_boxes)
from camfast.wsol import reference  # noqa: E402

needs_cpp = pytest.mark.skipif(not _extension.has_cpp("cpu"), reason="camfast._C is not built")

STEP = np.arange(0, 1, 0.2)  # the protocol's unit tests use five thresholds

UNIMODAL = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                     [0.0, 0.4, 0.4, 0.4, 0.6],
                     [0.0, 0.4, 1.0, 0.8, 0.6],
                     [0.0, 0.4, 0.4, 0.4, 0.6]])
MULTIMODAL = np.array([[0.4, 0.0, 0.2, 0.2, 0.2],
                       [0.4, 0.4, 0.0, 0.4, 0.0],
                       [0.0, 0.0, 0.0, 0.4, 0.0],
                       [1.0, 0.6, 0.8, 0.2, 0.2]])


def boxes_at(scoremap, thresholds=STEP, **kwargs):
    return [cam_to_boxes(scoremap, t, **kwargs).tolist() for t in thresholds]


# ---- the protocol's unit cases (evaluation_test.py), values worked out by hand ----------------

def test_degenerate_map_gives_the_zero_box():
    assert boxes_at(np.zeros((3, 3))) == [[[0, 0, 0, 0]]] * 5


def test_unimodal_boxes():
    # q = 0, 102, 153, 204, 255; levels int(t * 255) = 0, 51, 102, 153, 204; boxes end at max + 1
    # clipped to W - 1 = 4 and H - 1 = 3.
    assert [b[0] for b in boxes_at(UNIMODAL)] == [[1, 1, 4, 3], [1, 1, 4, 3], [2, 1, 4, 3], [2, 2, 4, 3],
                                                  [2, 2, 3, 3]]


def test_multimodal_boxes_take_the_largest_contour():
    assert [b[0] for b in boxes_at(MULTIMODAL)] == [[0, 0, 4, 3], [0, 0, 2, 2], [0, 3, 3, 3], [2, 3, 3, 3],
                                                    [0, 3, 1, 3]]


def test_nan_map_is_rejected_and_normalized_to_zeros():
    with pytest.raises(ValueError, match="scoremap"):
        cam_to_boxes(np.full((3, 3), np.nan), 0.5)
    assert torch.equal(normalize_cam(np.full((3, 3), np.nan)), torch.zeros(3, 3, dtype=torch.float64))


def test_iou_protocol_cases():
    assert (box_iou(np.zeros((3, 4)), np.zeros((5, 4))) == 1.0).all()
    eye = np.array([[1, 1, 3, 3], [4, 4, 5, 5]])
    assert (box_iou(eye, eye) == np.eye(2)).all()
    assert box_iou([[1, 2, 5, 6]], [[3, 1, 4, 5]])[0, 0] == 8 / 27
    assert box_iou([[0, 0, 1, 1]], [[3, 3, 4, 4]])[0, 0] == 0.0  # the intersection is clamped at 0


def test_resize_boxes_protocol_cases():
    assert resize_boxes([1, 2, 4, 3], (10, 20), (35, 10)).tolist() == [[3, 1, 14, 1]]
    assert resize_boxes([1, 2, 1, 2], (3, 3), (3, 3)).tolist() == [[1, 2, 1, 2]]


# ---- thresholds, contours and areas, by hand -------------------------------------------------

def test_threshold_is_strict():
    # 0.4 -> q = 102 and int(0.4 * 255) = 102: the pixel equal to the level is left out.
    scoremap = np.zeros((4, 6))
    scoremap[1, 1], scoremap[2, 4] = 0.4, 1.0
    assert cam_to_boxes(scoremap, 0.4).tolist() == [[4, 2, 5, 3]]
    assert sorted(cam_to_boxes(scoremap, 0.39, multi_contour=True).tolist()) == [[1, 1, 2, 2], [4, 2, 5, 3]]


def test_hole_contours_give_boxes_grown_by_one_pixel():
    ring = np.zeros((7, 7))
    ring[1:6, 1:6] = 1.0
    ring[3, 3] = 0.0
    # Outer: pixels 1..5 -> [1, 1, 6, 6]. Hole: pixel (3, 3), its contour runs through 2..4 -> [2, 2, 5, 5].
    assert sorted(cam_to_boxes(ring, 0.5, multi_contour=True).tolist()) == [[1, 1, 6, 6], [2, 2, 5, 5]]
    assert cam_to_boxes(ring, 0.5).tolist() == [[1, 1, 6, 6]]


def test_largest_contour_is_by_polygon_area_not_pixel_count():
    scoremap = np.zeros((8, 16))
    scoremap[1, 0:14] = 1.0   # 14 pixels in a line: contour area 0
    scoremap[4:7, 2:5] = 1.0  # 9 pixels in a block: contour area 4
    assert cam_to_boxes(scoremap, 0.5).tolist() == [[2, 4, 5, 7]]


def test_diagonal_pixels_form_one_contour():
    scoremap = np.eye(5)
    assert cam_to_boxes(scoremap, 0.5, multi_contour=True).tolist() == [[0, 0, 4, 4]]


def test_pas_thresholds_at_a_percentile():
    # 10 x 10 map, q = 0..99 row-major (score q / 255 rounds back to q): the 90th percentile is
    # 89.1, int(0.35 * 89.1) = 31, so the box holds q > 31, rows 3..9.
    scoremap = np.arange(100).reshape(10, 10) / 255 + 1e-9
    assert cam_to_boxes(scoremap, 0.35, percentile=90).tolist() == [[0, 3, 9, 9]]
    # int(0.5 * 89.1) = 44: q > 44 from row 4; against the maximum, int(0.5 * 99) = 49: from row 5.
    assert cam_to_boxes(scoremap, 0.5, percentile=90).tolist() == [[0, 4, 9, 9]]
    assert cam_to_boxes(scoremap, 0.5).tolist() == [[0, 5, 9, 9]]


def test_normalize_cam_matches_the_protocol_steps():
    cam = np.random.default_rng(0).standard_normal((3, 14, 14)).astype(np.float32)
    out = normalize_cam(torch.from_numpy(cam), (224, 224))
    assert out.dtype == torch.float64 and out.shape == (3, 224, 224)
    for m, o in zip(cam, out.numpy()):
        resized = cv2.resize(m.astype(np.float64), (224, 224), interpolation=cv2.INTER_CUBIC)
        resized -= resized.min()
        resized /= resized.max()
        assert np.array_equal(o, resized)
    assert torch.equal(normalize_cam(np.full((2, 5), 3.0)), torch.zeros(2, 5, dtype=torch.float64))


def test_normalize_cam_keeps_its_input_and_reads_any_strides():
    cam = torch.randn(2, 7, 7)
    before = cam.clone()
    normalize_cam(cam, (9, 11))
    assert torch.equal(cam, before)
    assert normalize_cam(cam, (9, 11)).shape == (2, 9, 11)
    transposed = cam.transpose(1, 2)
    assert torch.equal(normalize_cam(transposed, (9, 11)), normalize_cam(transposed.contiguous(), (9, 11)))


# ---- PxAP --------------------------------------------------------------------------------------

@pytest.mark.parametrize("batched", [False, True])
def test_pxap_by_hand(batched):
    # Foreground scores 0.9 and 0.6, background 0.6 and 0.1 (0.5 ignored); thresholds 0, 0.5:
    # tp = [0, 0, 2, 2], fp = [0, 0, 1, 2] from the top bin down; AP = 2/3 * 1 + 1/2 * 0.
    scores = np.array([[0.9, 0.6, 0.6, 0.1, 0.5]])
    mask = np.array([[1, 1, 0, 0, 255]])
    evaluator = MaskEvaluator(cam_thresholds=[0.0, 0.5], batched=batched)
    evaluator.accumulate(scores, mask)
    assert evaluator.compute().pxap == pytest.approx(200 / 3, abs=1e-12)


@pytest.mark.parametrize("batched", [False, True])
def test_pxap_perfect_map_and_ties_count_as_positive(batched):
    mask = np.zeros((2, 8, 8), dtype=np.uint8)
    mask[:, 2:5, 3:7] = 1
    mask[0, 0, 0] = 255
    evaluator = MaskEvaluator(batched=batched)
    evaluator.accumulate(mask.astype(np.float64) * (mask == 1), mask)
    assert evaluator.compute().pxap == 100.0
    evaluator = MaskEvaluator(cam_thresholds=[0.0, 0.25, 0.5], batched=batched)
    evaluator.accumulate(np.full((1, 2), 0.25), np.array([[1, 0]]))  # score == threshold: positive
    assert evaluator.compute().pxap == 50.0


def test_pxap_fast_matches_the_protocol_loop():
    rng = np.random.default_rng(3)
    maps = normalize_cam(rng.random((5, 6, 6)) ** 2, (40, 40)).numpy()
    maps[0, :3] = 1.0  # exact top scores go to the [1, 2) bin
    maps[1, :2] = np.round(maps[1, :2], 2)  # scores on bin edges
    masks = rng.choice([0, 1, 255], size=maps.shape, p=[0.6, 0.3, 0.1]).astype(np.uint8)
    results = []
    for batched in (False, True):
        evaluator = MaskEvaluator(batched=batched)
        evaluator.accumulate(maps[:2], masks[:2])
        evaluator.accumulate(maps[2:], masks[2:])
        results.append(evaluator)
    assert torch.equal(results[0].foreground, results[1].foreground)
    assert torch.equal(results[0].background, results[1].background)
    assert results[0].compute().pxap == results[1].compute().pxap


# ---- the batched sweep against the per-threshold OpenCV loop ----------------------------------

def structured_maps(rng, size):
    """Maps that stress contours: rings with holes, nested rings, lines, single pixels, diagonal
    chains, checkerboards, border-touching blobs, ties between equal blobs, few and many levels."""
    maps = []
    ring = np.zeros((size, size))
    ring[1:-1, 1:-1] = 0.6
    ring[3:-3, 3:-3] = 0.0
    ring[4:-4, 4:-4] = 1.0
    maps.append(ring)
    maps.append(np.indices((size, size)).sum(0) % 2 * 1.0)  # checkerboard: diagonal 8-connectivity
    twins = np.zeros((size, size))
    twins[1:3, 1:3] = twins[-3:-1, -3:-1] = 1.0  # two equal blobs: a tie in contour area
    twins[size // 2, :] = 0.5
    maps.append(twins)
    dots = (rng.random((size, size)) < 0.1) * rng.integers(1, 4, (size, size)) / 3
    maps.append(dots)
    maps.append(np.abs(np.subtract.outer(np.arange(size), np.arange(size))) % 3 / 2)  # diagonal lines
    maps.append(np.pad(np.ones((size - 4, size - 4)), 2) * rng.random((size, size)))
    return np.stack(maps)


def random_maps(rng, n, size):
    noise = rng.random((n, size, size))
    smooth = normalize_cam(rng.random((n, 5, 5)) ** 3, (size, size)).numpy()
    blocky = rng.integers(0, 4, (n, size, size)) / 3.0
    return np.concatenate([noise, smooth, blocky])


def random_gt(rng, n, height, width):
    gts = []
    for _ in range(n):
        g = rng.integers(1, 3)
        xs = np.sort(rng.integers(0, width, (g, 2)), axis=1)
        ys = np.sort(rng.integers(0, height, (g, 2)), axis=1)
        gts.append(np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1))
    return gts


def assert_sweeps_agree(maps, gts, **kwargs):
    fast = BoxEvaluator(backend="cpp", **kwargs).best_iou(maps, gts)
    slow = BoxEvaluator(backend="reference", **kwargs).best_iou(maps, gts)
    assert fast.shape == slow.shape
    mismatched = np.argwhere(fast != slow)
    assert len(mismatched) == 0, f"{len(mismatched)} mismatches, first (map, threshold) {mismatched[0]}"


@needs_cpp
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size", [(1, 1), (1, 9), (7, 1), (8, 8), (13, 17), (32, 29)])
def test_sweep_matches_reference_random(version, size):
    rng = np.random.default_rng(sum(size) * 10 + version)
    n = 4
    maps = normalize_cam(random_maps(rng, n, max(size)).reshape(3 * n, max(size), max(size)), size).numpy()
    gts = random_gt(rng, len(maps), *size)
    assert_sweeps_agree(maps, gts, version=version, cam_curve_interval=0.01)


@needs_cpp
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("percentile", [100, 90, 37.5])
def test_sweep_matches_reference_structured(version, percentile):
    rng = np.random.default_rng(int(percentile) + version)
    maps = normalize_cam(structured_maps(rng, 15)).numpy()
    gts = random_gt(rng, len(maps), 15, 15)
    assert_sweeps_agree(maps, gts, version=version, cam_curve_interval=0.004, percentile=percentile)


@needs_cpp
@pytest.mark.parametrize("version", [1, 2])
def test_sweep_matches_reference_cam_sized(version):
    rng = np.random.default_rng(version)
    maps = normalize_cam(rng.standard_normal((3, 14, 14)), (224, 224)).numpy()
    gts = random_gt(rng, 3, 224, 224)
    assert_sweeps_agree(maps, gts, version=version, cam_curve_interval=0.001)


# ---- evaluators ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
def test_box_evaluator_curves_by_hand(backend):
    # Map 0 finds its box at every threshold (IoU 1); map 1's box [2, 2, 5, 5] (16 pixels) holds
    # its 3 x 2 object: IoU 6 / 16 = 0.375 (>= 0.3, < 0.5) at every threshold.
    maps = np.zeros((2, 6, 6))
    maps[0, 1:3, 1:3] = 1.0
    maps[1, 2:5, 2:5] = 1.0
    gts = [np.array([[1, 1, 3, 3]]), np.array([[2, 3, 4, 4]])]
    evaluator = BoxEvaluator(cam_thresholds=[0.1, 0.5], backend=backend)
    evaluator.accumulate(maps[:1], gts[:1], correct=[True])
    evaluator.accumulate(maps[1:], gts[1:], correct=[False])
    result = evaluator.compute()
    assert result.max_box_acc == {30: 100.0, 50: 50.0, 70: 50.0}
    assert result.value == pytest.approx(200 / 3)
    assert result.gt_known_loc == 50.0 and result.top1_loc == 50.0 and result.best_threshold == 0.1
    v1 = BoxEvaluator(version=1, cam_thresholds=[0.1, 0.5], backend=backend)
    v1.accumulate(maps, np.concatenate(gts))  # [N, 4]: one box per map
    assert v1.compute().value == 50.0 and v1.compute().top1_loc is None


@needs_cpp
def test_box_evaluator_accumulates_like_the_protocol():
    rng = np.random.default_rng(7)
    maps = normalize_cam(rng.random((6, 4, 4)), (24, 24)).numpy()
    gts = random_gt(rng, 6, 24, 24)
    correct = rng.random(6) < 0.5
    results = []
    for backend in ("reference", "cpp"):
        evaluator = BoxEvaluator(backend=backend, cam_curve_interval=0.01)
        evaluator.accumulate(maps[:4], gts[:4], correct[:4])
        evaluator.accumulate(torch.from_numpy(maps[4:5]), [torch.from_numpy(g) for g in gts[4:5]], correct[4:5])
        evaluator.accumulate(maps[5], gts[5], correct[5:])  # one map, its [G, 4] boxes
        results.append(evaluator.compute())
    assert np.array_equal(results[0].gt_known_curve, results[1].gt_known_curve)
    assert np.array_equal(results[0].top1_curve, results[1].top1_curve)
    assert results[0].value == results[1].value


def test_reference_mirrors_the_protocol_slicing():
    # Two boxes at one threshold: the best IoU over boxes and ground truths is kept.
    ring = np.zeros((7, 7))
    ring[1:6, 1:6] = 1.0
    ring[3, 3] = 0.0
    ious = reference.best_iou_at_thresholds(ring, np.array([[2, 2, 5, 5]]), np.array([0.5]), multi_contour=True)
    assert ious.tolist() == [1.0]


# ---- the compiled op -------------------------------------------------------------------------

@needs_cpp
def test_op_opcheck_and_compile():
    q = torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8)
    gt = torch.tensor([[[1, 1, 5, 5], [0, 0, 0, 0]]] * 3)
    count = torch.tensor([1, 2, 1])
    for multi in (False, True):
        torch.library.opcheck(torch.ops.camfast.wsol_box_sweep.default, (q, gt, count, multi))
    compiled = torch.compile(lambda *a: torch.ops.camfast.wsol_box_sweep(*a), fullgraph=True)
    expected = torch.ops.camfast.wsol_box_sweep(q, gt, count, True)
    for got, want in zip(compiled(q, gt, count, True), expected):
        assert torch.equal(got, want)


@needs_cpp
def test_op_rejects_bad_input():
    q = torch.zeros(2, 4, 4, dtype=torch.uint8)
    gt = torch.zeros(2, 1, 4, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="q must be uint8"):
        torch.ops.camfast.wsol_box_sweep(q.float(), gt, torch.ones(2, dtype=torch.int64), True)
    with pytest.raises(RuntimeError, match="gt_count"):
        torch.ops.camfast.wsol_box_sweep(q, gt, torch.zeros(2, dtype=torch.int64), True)


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
def test_bad_input(backend):
    maps = np.zeros((2, 5, 5))
    gts = [np.array([[0, 0, 1, 1]])] * 2
    evaluator = BoxEvaluator(backend=backend)
    with pytest.raises(ValueError, match="scoremaps"):
        evaluator.accumulate(maps + 2, gts)
    with pytest.raises(TypeError, match="scoremaps"):
        evaluator.accumulate(maps.astype(np.int64), gts)
    with pytest.raises(ValueError, match="scoremaps"):
        evaluator.accumulate(np.zeros((1, 1, 5, 5)), gts)
    with pytest.raises(ValueError, match="gt_boxes"):
        evaluator.accumulate(maps, gts[:1])
    with pytest.raises(ValueError, match="gt_boxes"):
        evaluator.accumulate(maps, [np.array([[3, 0, 1, 1]])] * 2)
    with pytest.raises(ValueError, match="correct"):
        evaluator.accumulate(maps, gts, correct=[True])
    with pytest.raises(RuntimeError, match="no score maps"):
        evaluator.compute()
    with pytest.raises(ValueError, match="version"):
        BoxEvaluator(version=3)
    with pytest.raises(ValueError, match="cam_curve_interval"):
        BoxEvaluator(cam_curve_interval=0)
    with pytest.raises(ValueError, match="percentile"):
        BoxEvaluator(percentile=0)
    with pytest.raises(ValueError, match="backend"):
        BoxEvaluator(backend="triton")
    with pytest.raises(ValueError, match="masks"):
        MaskEvaluator().accumulate(maps, np.zeros((2, 4, 5)))
    with pytest.raises(TypeError, match="batched"):
        MaskEvaluator(batched="cpp")
    with pytest.raises(ValueError, match="threshold"):
        cam_to_boxes(maps[0], 1.5)
    with pytest.raises(ValueError, match="size"):
        normalize_cam(maps, (0, 3))
    with pytest.raises(TypeError, match="cam"):
        normalize_cam([[0.0]])


def test_empty_batch():
    evaluator = BoxEvaluator()
    evaluator.accumulate(np.zeros((0, 5, 5)), [])
    assert evaluator.count == 0
    assert normalize_cam(np.zeros((0, 3, 3)), (4, 4)).shape == (0, 4, 4)
