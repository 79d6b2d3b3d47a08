"""camfast.metrics: against torchcam 0.5.0 and grad-cam 1.5.7 (run for real), a transcription of
the RISE authors' evaluation, grad-cam's sparse direct solve for the imputation, and by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from camfast.metrics import average_drop_increase, deletion_insertion, impute, road
from camfast.metrics.deletion_insertion import rise_blur, rise_blur_kernel
from camfast.metrics.imputation import _solve

ROOT = Path(__file__).parent.parent
HAVE_SOURCE = (ROOT / "benchmarks").is_dir()
# grad-cam converts tensors with np.float32(list of tensors), which NumPy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


def needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing) or not HAVE_SOURCE, reason=f"needs {missing} and the source tree")


class SmallNet(nn.Module):
    """A small CNN whose scores react to where the pixels change."""

    def __init__(self, classes: int = 7):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 5, 2, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                      nn.BatchNorm2d(16))
        self.fc = nn.Linear(16 * 4, classes)

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 2).flatten(1))


def model_and_data(n=3, size=32, cam_size=8, seed=0):
    torch.manual_seed(seed)
    model = SmallNet().eval()
    x = torch.randn(n, 3, size, size)
    cams = torch.rand(n, cam_size, cam_size)  # continuous: no ties
    return model, x, cams


# ---- Average Drop / Increase ------------------------------------------------------------------

@needs("torchcam")
@pytest.mark.parametrize("score", ["logit", "prob"])
def test_average_drop_matches_torchcam(score):
    from benchmarks.metric_peers import torchcam_average_drop

    model, x, cams = model_and_data(n=6)
    targets = [0, 3, 6, 1, 1, 2]
    drop, increase = average_drop_increase(model, x, cams, targets, score=score, batch_size=4)
    peer = torchcam_average_drop(model, x, cams, targets, score)
    assert abs(drop.mean().item() - peer["avg_drop"]) < 1e-6
    assert increase.sum().item() == round(peer["conf_increase"] * len(targets))


@needs("pytorch_grad_cam", "cv2")
def test_average_drop_matches_gradcam_confidence_change():
    from benchmarks.metric_peers import gradcam_confidence_change

    model, x, cams = model_and_data(size=16, cam_size=16)
    targets = [2, 5, 0]
    change = gradcam_confidence_change(model, x, cams, targets, "prob")
    drop, increase = average_drop_increase(model, x, cams, targets, score="prob")
    s = model(x).softmax(1)[range(3), targets].detach()
    torch.testing.assert_close(drop, (-torch.from_numpy(change)).clamp_min(0) / (s + 1e-7), atol=1e-6, rtol=0)
    assert increase.tolist() == (change > 0).tolist()


def test_average_drop_by_hand():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
    x = torch.ones(2, 1, 2, 2)
    cams = torch.tensor([[[1.0, 1], [0, 0]], [[1.0, 1], [1, 1]]])  # keeps half, keeps all
    drop, increase = average_drop_increase(model, x, cams, 0, score="logit")
    torch.testing.assert_close(drop, torch.tensor([2 / (4 + 1e-7), 0.0]))
    assert increase.tolist() == [False, False]


# ---- Deletion / Insertion ---------------------------------------------------------------------

@needs("torchcam")
@pytest.mark.parametrize("steps,batch_size", [(20, 32), (7, 5), (1, 3)])
def test_deletion_insertion_matches_torchcam(steps, batch_size):
    from benchmarks.metric_peers import torchcam_deletion_insertion

    model, x, cams = model_and_data(n=4, size=20, cam_size=5)  # P = 400: a shorter last interval
    targets = [1, 4, 4, 0]
    ours = deletion_insertion(model, x, cams, targets, preset="torchcam", steps=steps, batch_size=batch_size)
    peer = torchcam_deletion_insertion(model, x, cams, targets, steps=steps, batch_size=batch_size)
    assert abs(ours.deletion_auc.mean().item() - peer["deletion_auc"]) < 1e-6
    assert abs(ours.insertion_auc.mean().item() - peer["insertion_auc"]) < 1e-6
    if steps == 7:  # the example of torchcam's step rule: ceil(400 / 7) = 58
        assert (ours.fractions * 400).round().long().tolist() == [0, 58, 116, 174, 232, 290, 348, 400]


@needs("torchcam")
def test_deletion_insertion_matches_torchcam_per_image_and_with_ties():
    from benchmarks.metric_peers import torchcam_deletion_insertion

    model, x, cams = model_and_data(n=3, size=16, cam_size=16)
    cams = (cams * 4).floor() / 4  # four levels: the tie order decides which pixels go first
    ours = deletion_insertion(model, x, cams, preset="torchcam", score="prob", steps=9)
    predicted = model(x).argmax(1).tolist()
    for i in range(3):
        peer = torchcam_deletion_insertion(model, x[i:i + 1], cams[i:i + 1], predicted[i:i + 1], "prob", steps=9)
        assert abs(ours.deletion_auc[i].item() - peer["deletion_auc"]) < 1e-6
        assert abs(ours.insertion_auc[i].item() - peer["insertion_auc"]) < 1e-6


@needs("scipy")
def test_rise_blur_kernel_is_gkern():
    from benchmarks.metric_peers import rise_gkern

    assert torch.equal(rise_blur_kernel(), rise_gkern(11, 5)[0, 0])
    x = torch.randn(2, 3, 24, 24)
    from benchmarks.metric_peers import rise_blur as transcribed
    torch.testing.assert_close(rise_blur(x), transcribed(x), atol=1e-6, rtol=0)


@needs("scipy")
@pytest.mark.slow
def test_deletion_insertion_matches_rise_transcription():
    from benchmarks.metric_peers import rise_auc, rise_single_run

    model, x, _ = model_and_data(n=2, size=224)
    cams = torch.rand(2, 224, 224)  # continuous: NumPy's tie order never matters
    ours = deletion_insertion(model, x, cams, preset="rise", batch_size=64)
    for i in range(2):
        for mode, curve, auc in (("del", ours.deletion_curve, ours.deletion_auc),
                                 ("ins", ours.insertion_curve, ours.insertion_auc)):
            scores = rise_single_run(model, x[i:i + 1], cams[i].numpy(), mode)
            assert len(scores) == 225
            np.testing.assert_allclose(curve[i].numpy(), scores, atol=1e-6, rtol=0)
            assert abs(auc[i].item() - rise_auc(scores)) < 1e-6


def test_deletion_ties_go_lower_index_first():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 10, 100, 1000]]))
    x = torch.ones(1, 1, 2, 2)
    cams = torch.zeros(1, 2, 2)  # all tied: deleted in the order 0, 1, 2, 3
    result = deletion_insertion(model, x, cams, 0, preset="torchcam", steps=4)
    assert result.deletion_curve[0].tolist() == [1111, 1110, 1100, 1000, 0]
    assert result.insertion_curve[0].tolist() == [0, 1, 11, 111, 1111]
    assert result.fractions.tolist() == [0, 0.25, 0.5, 0.75, 1]


def test_deletion_insertion_with_class_axis_nan_and_baseline():
    model, x, cams = model_and_data(n=2)
    stacked = torch.stack([cams, cams.flip(-1)], 1)  # [N, T, h, w]
    stacked[1, 1, 0, 0] = float("nan")
    result = deletion_insertion(model, x, stacked, [[1, 2], [3, 4]], preset="torchcam", baseline=x.mean())
    assert result.deletion_auc.shape == (2, 2) and result.deletion_curve.shape == (2, 2, 21)
    assert result.deletion_auc[1, 1].isnan() and not result.deletion_auc[0].isnan().any()
    single = deletion_insertion(model, x[:1], cams[:1].flip(-1), [2], preset="torchcam", baseline=x.mean())
    torch.testing.assert_close(result.deletion_auc[0, 1], single.deletion_auc[0], atol=1e-6, rtol=0)


# ---- ROAD -------------------------------------------------------------------------------------

@needs("pytorch_grad_cam", "scipy", "cv2")
@pytest.mark.parametrize("size", [(17, 17), (24, 19)])
def test_impute_matches_sparse_direct_solve(size):
    from benchmarks.metric_peers import sparse_impute

    torch.manual_seed(1)
    images = torch.randn(4, 3, *size)
    unknown = torch.rand(4, *size) < torch.tensor([0.1, 0.5, 0.9, 0.99])[:, None, None]
    unknown[0, :, :3] = True  # a region along the border
    ours = impute(images, unknown)
    # The tensor-op solver other devices run (the compiled op serves the CPU when it is built).
    tensor_ops = _solve(images.double(), unknown, 1e-8, 500).float()
    for i in range(4):
        expected = sparse_impute(images[i], unknown[i])
        torch.testing.assert_close(ours[i], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(tensor_ops[i], expected, atol=1e-5, rtol=0)
    assert torch.equal(ours[~unknown[:, None].expand_as(images)], images[~unknown[:, None].expand_as(images)])


def test_impute_edge_cases():
    images = torch.randn(3, 2, 5, 5)
    nothing = torch.zeros(3, 5, 5, dtype=torch.bool)
    assert torch.equal(impute(images, nothing), images)
    everything = torch.ones(3, 5, 5, dtype=torch.bool)  # no known pixel: a singular system, zeros
    assert torch.equal(impute(images, everything), torch.zeros_like(images))
    one = torch.zeros(1, 1, 1, 1)
    assert torch.equal(impute(one, torch.ones(1, 1, 1, dtype=torch.bool)), one)
    assert torch.equal(_solve(images.double(), everything, 1e-8, 50), torch.zeros_like(images).double())
    # A single hole in a constant image is filled with the constant.
    flat = torch.full((1, 1, 6, 7), 2.5)
    hole = torch.zeros(1, 6, 7, dtype=torch.bool)
    hole[0, 2:4, 3:6] = True
    torch.testing.assert_close(impute(flat, hole), flat)


@needs("pytorch_grad_cam", "scipy", "cv2")
def test_road_matches_gradcam_without_noise():
    from benchmarks.metric_peers import gradcam_road

    model, x, _ = model_and_data(n=3, size=24)
    cams = torch.rand(3, 24, 24)
    targets = [1, 2, 5]
    peer = gradcam_road(model, x, cams, targets, [10, 40, 90])
    for order in ("morf", "lerf", "combined"):
        ours = road(model, x, cams, targets, order=order, percentiles=[10, 40, 90], noise=0, batch_size=4)
        np.testing.assert_allclose(ours.value.numpy(), peer[order], atol=1e-4, rtol=0)


@needs("pytorch_grad_cam", "scipy", "cv2")
def test_road_legacy_auto_matches_gradcam():
    from benchmarks.metric_peers import gradcam_road_auto

    model, x, _ = model_and_data(n=3, size=24)
    cams = torch.rand(3, 24, 24) ** 3
    with pytest.raises(ValueError, match="legacy=True"):
        road(model, x, cams, percentiles="auto")
    ours = road(model, x, cams, [0, 1, 2], order="morf", percentiles="auto", legacy=True, noise=0)
    np.testing.assert_allclose(ours.value.numpy(), gradcam_road_auto(model, x, cams, [0, 1, 2]), atol=1e-4, rtol=0)


def test_road_percentile_masks_by_hand():
    # 10 pixels with values 0..9: np.percentile(., 80) = 7.2, MoRF imputes 8 and 9.
    from camfast.metrics.road import _keep_masks

    cams = torch.arange(10.0)[None] / 9
    keep = _keep_masks(cams, (80.0, 0.0, 100.0), least_first=False)[0]
    assert keep[0].tolist() == [True] * 8 + [False] * 2
    assert keep[1].tolist() == [False] * 10  # keep cam < min: nothing kept
    assert keep[2].tolist() == [True] * 9 + [False]


def test_road_noise_comes_from_the_generator_and_accuracy_score():
    model, x, cams = model_and_data(n=2, size=16)
    run = lambda seed: road(model, x, cams, percentiles=[50], generator=torch.Generator().manual_seed(seed))  # noqa
    torch.testing.assert_close(run(3).value, run(3).value, atol=0, rtol=0)
    assert not torch.equal(run(3).morf, run(4).morf)
    accuracy = road(model, x, cams, order="morf", percentiles=[30, 60], score="accuracy", noise=0)
    assert set(accuracy.morf.unique().tolist()) <= {0.0, 1.0} and accuracy.original.tolist() == [1.0, 1.0]
    assert accuracy.lerf is None


# ---- what every metric shares -----------------------------------------------------------------

METRICS = [
    lambda *a, **k: average_drop_increase(*a, **k),
    lambda *a, **k: deletion_insertion(*a, preset="torchcam", **k),
    lambda *a, **k: road(*a, percentiles=[50], noise=0, **k),
]


@pytest.mark.parametrize("metric", METRICS, ids=["average_drop", "deletion_insertion", "road"])
def test_bad_input_names_the_argument(metric):
    model, x, cams = model_and_data(n=2)
    with pytest.raises(TypeError, match="model"):
        metric("model", x, cams)
    with pytest.raises(ValueError, match="x must be 4-D"):
        metric(model, x[0], cams)
    with pytest.raises(ValueError, match="cams must be"):
        metric(model, x, cams[:1])
    with pytest.raises(TypeError, match="cams must be"):
        metric(model, x, cams.long())
    with pytest.raises(ValueError, match="targets must lie"):
        metric(model, x, cams, [0, 99])
    with pytest.raises(ValueError, match="targets must hold"):
        metric(model, x, cams, [0, 1, 2])
    with pytest.raises(ValueError, match="batch_size"):
        metric(model, x, cams, batch_size=0)
    with pytest.raises(ValueError, match="score"):
        metric(model, x, cams, score="softmax")


@pytest.mark.parametrize("metric", METRICS, ids=["average_drop", "deletion_insertion", "road"])
def test_inputs_kept_train_mode_restored_batch_independent(metric):
    model, x, cams = model_and_data(n=4)
    model.train()
    x_before, cams_before = x.clone(), cams.clone()
    whole = metric(model, x, cams, [0, 1, 2, 3], batch_size=3)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(x, x_before) and torch.equal(cams, cams_before)
    part = metric(model, x[2:], cams[2:], [2, 3], batch_size=64)
    first = lambda r: r[0] if isinstance(r, tuple) else (r.value if hasattr(r, "value") else r.deletion_auc)  # noqa
    torch.testing.assert_close(first(whole)[2:], first(part), atol=1e-6, rtol=0)


@pytest.mark.parametrize("metric", METRICS, ids=["average_drop", "deletion_insertion", "road"])
def test_empty_batch(metric):
    model, x, cams = model_and_data(n=2)
    result = metric(model, x[:0], cams[:0])
    first = result[0] if isinstance(result, tuple) else getattr(result, "value", getattr(result, "deletion_auc", None))
    assert first.shape == (0,)


# ---- the stateful metrics ---------------------------------------------------------------------

def test_stateful_metrics_accumulate_the_functional_values():
    from camfast.metrics import ROAD, AverageDropIncrease, DeletionInsertion

    model, x, cams = model_and_data(n=5)
    cams[4, 0, 0] = float("nan")
    metric = AverageDropIncrease(model, score="logit")
    metric.update(x[:2], cams[:2])
    metric.update(x[2:], cams[2:])
    drop, increase = average_drop_increase(model, x, cams, score="logit")
    result = metric.compute()
    assert result["average_drop"] == pytest.approx(drop[:4].double().mean().item(), abs=1e-6)
    assert result["increase_in_confidence"] == increase[:4].double().mean().item()
    assert int(metric.nan_count) == 1
    metric.reset()
    assert int(metric.nan_count) == 0 and len(metric.average_drop) == 0
    di = DeletionInsertion(model, preset="torchcam")
    di.update(x[:4], cams[:4])
    assert di.compute()["deletion_auc"] == pytest.approx(
        deletion_insertion(model, x[:4], cams[:4], preset="torchcam").deletion_auc.double().mean().item(), abs=1e-6)
    assert "model" not in dict(di.named_children()) and di.model is model
    r = ROAD(model, percentiles=[50], noise=0)
    r.update(x[:4], cams[:4])
    assert r.compute()["road"] == pytest.approx(
        road(model, x[:4], cams[:4], percentiles=[50], noise=0).value.double().mean().item(), abs=1e-6)


def test_camfast_imports_and_evaluates_without_torchmetrics():
    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "import numpy as np, torch, camfast, camfast.metrics\n"
        "from camfast.wsol import MaskEvaluator\n"
        "e = MaskEvaluator(cam_curve_interval=0.25); m = np.zeros((1, 4, 4)); m[0, :2] = 1\n"
        "e.update(m, (m > 0).astype(np.uint8)); assert e.compute().pxap == 100.0\n"
        "model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))\n"
        "a = camfast.metrics.AverageDropIncrease(model); a.update(torch.randn(2, 3, 4, 4), torch.rand(2, 4, 4))\n"
        "assert set(a.compute()) == {'average_drop', 'increase_in_confidence'}\n"
        "assert 'torchmetrics' not in type(a).__mro__[-3].__module__\n"
    )
    import subprocess
    import sys

    import camfast
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(camfast.__file__).parent.parent)
    assert run.returncode == 0, run.stderr
