"""AblationCAM, EigenCAM, EigenGradCAM, FullGrad and SmoothGradCAM++ against the real peers.

grad-cam 1.5.7 and torchcam 0.5.0 are installed in the test environment (`make test`). Each
method runs on two architectures (a plain GAP + FC CNN and a residual net with BatchNorm and
in-place ReLU), several images and classes; agreement means a per-image correlation of at least
0.99999 and a largest difference of at most 1e-5 after the peer's map is resized to the input
and min-maxed.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import camfast.cam as cc
from camfast.cam import eigen
from camfast.cam.eigen import first_component
from camfast_testing.cam_models import PlainNet, resnet

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks").is_dir(), reason="tests run outside the source tree")

CORR, DIFF = 0.99999, 1e-5


# (model factory, a post-ReLU inner layer, the post-ReLU layer that feeds GAP -> fc, a layer
# with negative values)
ARCHS = {"plain": (PlainNet, "features.4", "features.7", "features.3"),
         "resnet": (resnet, "layer3", "expand", "layer3.bn2")}


@pytest.fixture(params=sorted(ARCHS))
def arch(request):
    torch.manual_seed(0)
    make, *layers = ARCHS[request.param]
    return make(), *layers


@pytest.fixture
def x():
    return torch.rand(3, 3, 96, 96)


TARGETS = [3, 11, 7]


def gradcam_lib():
    from benchmarks import peers

    if peers.load("grad-cam") is None:
        pytest.fail("grad-cam 1.5.7 must be installed for these tests (make test installs it)")
    import pytorch_grad_cam
    import pytorch_grad_cam.ablation_cam

    # grad-cam's AblationCAM draws a tqdm bar per image: silence it.
    pytorch_grad_cam.ablation_cam.tqdm = types.SimpleNamespace(tqdm=lambda it, *a, **k: it)
    return pytorch_grad_cam


def gradcam_maps(method: str, model, layer: str | None, x, targets, aug_smooth: bool = False,
                 **kwargs) -> torch.Tensor:
    lib = gradcam_lib()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layers = [] if layer is None else [dict(model.named_modules())[layer]]
    cam = getattr(lib, method)(model, layers, **kwargs)
    classes = None if targets is None else [ClassifierOutputTarget(t) for t in targets]
    try:
        return torch.from_numpy(cam(x, classes, aug_smooth=aug_smooth))
    finally:
        cam.activations_and_grads.release()


def agreement(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """(smallest per-image correlation, largest difference), the peer's maps at ours' size."""
    from benchmarks.peers import as_input_maps, correlation

    theirs = as_input_maps(theirs.to(ours.device), ours.shape[-2:])
    return correlation(ours, theirs), (ours - theirs).abs().max().item()


def assert_agrees(ours, theirs):
    corr, diff = agreement(ours, theirs)
    assert corr >= CORR and diff <= DIFF, (corr, diff)


# ---------------------------------------------------------------- EigenCAM, EigenGradCAM

@pytest.mark.parametrize("method", ["EigenCAM", "EigenGradCAM"])
def test_eigen_matches_gradcam(arch, x, method, monkeypatch):
    model, inner, last, negative = arch
    for layer in (inner, last):
        theirs = gradcam_maps(method, model, layer, x, TARGETS)
        explainer = getattr(cc, method)(model, layer, sign="lapack")
        assert_agrees(explainer(x, TARGETS), theirs)
        # The deterministic sign gives, per image, grad-cam's map or the one of the other sign.
        absmax = getattr(cc, method)(model, layer)(x, TARGETS)
        with monkeypatch.context() as patch:
            patch.setattr(eigen, "first_component", lambda a, sign: -first_component(a, sign))
            flipped = getattr(cc, method)(model, layer)(x, TARGETS)
        for i in range(x.shape[0]):
            options = [agreement(m[i:i + 1], theirs[i:i + 1]) for m in (absmax, flipped)]
            assert any(c >= CORR and d <= DIFF for c, d in options), options


def test_first_component_equals_the_svd():
    x = torch.rand(4, 6, 5, 7, dtype=torch.float64)  # K < hw: the K x K Gram matrix
    wide = torch.rand(2, 40, 3, 3, dtype=torch.float64)  # K > hw: the hw x hw one
    for a in (x, wide):
        m = a.flatten(2).mT - a.flatten(2).mT.mean(1, keepdim=True)
        v = torch.linalg.svd(m, full_matrices=False).Vh[:, 0]
        svd = torch.einsum("npk,nk->np", m, v)
        ours = first_component(a).flatten(1)
        torch.testing.assert_close(ours.abs(), svd.abs())
        # absmax: the entry of largest magnitude is positive
        assert (ours.gather(1, ours.abs().argmax(1, keepdim=True)) > 0).all()
    assert first_component(torch.zeros(1, 3, 2, 2)).abs().sum() == 0
    nan = x.float().clone()
    nan[0, 0, 0, 0] = float("nan")
    assert first_component(nan).isfinite().all()  # NaN is read as 0, as grad-cam does


# ---------------------------------------------------------------- AblationCAM

@pytest.mark.parametrize("options,mode", [({}, "fx"), ({"split": False}, "model"), ({"fast": False}, "fx")])
def test_ablation_matches_gradcam_on_post_relu_layers(arch, x, options, mode):
    model, inner, last, negative = arch
    explainer = cc.AblationCAM(model, inner, batch_size=13, **options)
    assert_agrees(explainer(x, TARGETS), gradcam_maps("AblationCAM", model, inner, x, TARGETS))
    assert explainer.mode == mode


def test_ablation_gap_shortcut_is_exact(arch, x):
    model, inner, last, negative = arch
    theirs = gradcam_maps("AblationCAM", model, last, x, TARGETS)
    calls = []
    handle = model.fc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        shortcut = cc.AblationCAM(model, last)
        ours = shortcut(x, TARGETS)
    finally:
        handle.remove()
    assert shortcut.mode == "gap-linear" and calls == [x.shape[0]]  # the clean forward only
    assert_agrees(ours, theirs)
    forwarded = cc.AblationCAM(model, last, fast=False)
    torch.testing.assert_close(forwarded(x, TARGETS), ours, atol=1e-5, rtol=1e-5)
    assert forwarded.mode == "fx"


def test_ablation_with_a_head(x):
    torch.manual_seed(0)
    model = resnet()
    head = nn.Sequential(model.layer4, model.expand, model.pool, nn.Flatten(), model.fc)
    explainer = cc.AblationCAM(model, "layer3", head=head)
    assert_agrees(explainer(x, TARGETS), gradcam_maps("AblationCAM", model, "layer3", x, TARGETS))
    assert explainer.mode == "head"
    gap = cc.AblationCAM(model, "expand", head=nn.Sequential(model.pool, nn.Flatten(), model.fc))
    gap(x, TARGETS)
    assert gap.mode == "gap-linear"
    with pytest.raises(ValueError, match="head"):
        cc.AblationCAM(model, "layer3", head=nn.Sequential(model.layer4, model.expand, model.pool,
                                                          nn.Flatten(), nn.Linear(64, 20)))(x, TARGETS)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_ablation_ratio_matches_gradcam(arch, x, ratio):
    model, inner, last, negative = arch
    explainer = cc.AblationCAM(model, inner, ratio_channels_to_ablate=ratio)
    theirs = gradcam_maps("AblationCAM", model, inner, x, TARGETS, ratio_channels_to_ablate=ratio)
    assert_agrees(explainer(x, TARGETS), theirs)


def test_ablation_value_rules(arch, x):
    model, inner, last, negative = arch
    with pytest.raises(ValueError, match="ablation_value='grad-cam-legacy'"):
        cc.AblationCAM(model, negative)(x, TARGETS)
    for split in (True, False):
        legacy = cc.AblationCAM(model, negative, ablation_value="grad-cam-legacy", split=split)
        assert_agrees(legacy(x, TARGETS), gradcam_maps("AblationCAM", model, negative, x, TARGETS))


def test_ablation_skip_connection_around_the_layer(x):
    # A layer inside a residual block: the block's input crosses the cut and feeds the suffix.
    torch.manual_seed(0)
    model = resnet()
    explainer = cc.AblationCAM(model, "layer3.conv1", ablation_value="grad-cam-legacy")
    assert_agrees(explainer(x, TARGETS), gradcam_maps("AblationCAM", model, "layer3.conv1", x, TARGETS))
    assert explainer.mode == "fx"


def test_ablation_untraceable_model_runs_the_whole_model(x):
    class Branchy(PlainNet):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 1.0
            return super().forward(x)

    torch.manual_seed(0)
    model = Branchy()
    explainer = cc.AblationCAM(model, "features.4")
    assert_agrees(explainer(x, TARGETS), gradcam_maps("AblationCAM", model, "features.4", x, TARGETS))
    assert explainer.mode == "model"


def test_ablation_bad_arguments():
    model = PlainNet()
    for bad in (0, 1.5, -0.1, True, "half"):
        with pytest.raises(ValueError, match="ratio_channels_to_ablate"):
            cc.AblationCAM(model, "features.4", ratio_channels_to_ablate=bad)
    with pytest.raises(ValueError, match="ablation_value"):
        cc.AblationCAM(model, "features.4", ablation_value="min")
    with pytest.raises(TypeError, match="head"):
        cc.AblationCAM(model, "features.4", head=3)
    with pytest.raises(ValueError, match="batch_size"):
        cc.AblationCAM(model, "features.4", batch_size=0)


# ---------------------------------------------------------------- FullGrad

def test_fullgrad_matches_gradcam(arch, x):
    model, inner, last, negative = arch
    assert_agrees(cc.FullGrad(model)(x, TARGETS), gradcam_maps("FullGrad", model, None, x, TARGETS))


def test_fullgrad_pairs_biases_with_their_own_gradients(x):
    class TwoConvs(nn.Module):
        def __init__(self, registration_order):
            super().__init__()
            layers = {"first": nn.Conv2d(3, 8, 3, padding=1), "second": nn.Conv2d(8, 8, 3, padding=1)}
            for name in registration_order:
                setattr(self, name, layers[name])
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.second(torch.relu(self.first(x)))).mean((2, 3)))

    # Registered in the reverse of execution order: grad-cam pairs biases by registration order.
    torch.manual_seed(0)
    model = TwoConvs(["second", "first"]).eval()
    ordered = TwoConvs(["first", "second"]).eval()
    ordered.load_state_dict(model.state_dict())
    ours = cc.FullGrad(model)(x, [1, 2, 4])
    assert_agrees(ours, gradcam_maps("FullGrad", ordered, None, x, [1, 2, 4]))
    corr, _ = agreement(ours, gradcam_maps("FullGrad", model, None, x, [1, 2, 4]))
    assert corr < 0.999  # grad-cam mis-pairs the reversed model


# ---------------------------------------------------------------- SmoothGradCAM++

def test_smoothgradcampp_reproduces_torchcam_with_a_seed(arch, x):
    from torchcam.methods import SmoothGradCAMpp

    model, inner, last, negative = arch
    x = x[:, :, :64, :64]
    for layer in (inner, last):
        with SmoothGradCAMpp(model, layer, num_samples=3, std=0.2, input_shape=tuple(x.shape[1:])) as extractor:
            model(x)
            torch.manual_seed(7)
            theirs = extractor(class_idx=TARGETS)[0]
        torch.manual_seed(7)
        ours = cc.SmoothGradCAMpp(model, layer, num_samples=3, std=0.2)(x, TARGETS)
        assert_agrees(ours, theirs)
        seeded = cc.SmoothGradCAMpp(model, layer, num_samples=3, std=0.2, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(seeded(x, TARGETS), ours)


@pytest.mark.parametrize("size,batch_size", [(64, 5), (66, 16)])  # H W or batch_size a multiple of 16
def test_sscam_reproduces_torchcam_noise_with_a_seed(size, batch_size):
    from torchcam.methods import SSCAM

    torch.manual_seed(0)
    model = PlainNet()
    x = torch.rand(2, 3, size, size)
    with SSCAM(model, "features.7", batch_size=batch_size, num_samples=2, std=2.0,
               input_shape=tuple(x.shape[1:])) as extractor, torch.no_grad():
        model(x)
        torch.manual_seed(4)
        theirs = extractor(class_idx=[3, 11])[0]
    after_theirs = torch.rand(3)
    torch.manual_seed(4)
    ours = cc.SSCAM(model, "features.7", batch_size=batch_size, num_samples=2, std=2.0)(x, [3, 11])
    assert_agrees(ours, theirs)
    torch.testing.assert_close(torch.rand(3), after_theirs)  # the generator is left where torchcam leaves it
    device = cc.SSCAM(model, "features.7", num_samples=2, std=2.0, noise="device",
                      generator=torch.Generator().manual_seed(4))
    assert agreement(device(x, [3, 11]), theirs)[0] < CORR  # other noise values
    with pytest.raises(ValueError, match="generator"):
        cc.SSCAM(model, "features.7", generator=torch.device("cpu"))
    with pytest.raises(ValueError, match="noise"):
        cc.SSCAM(model, "features.7", noise="gpu")


def test_smoothgradcampp_bad_arguments():
    model = PlainNet()
    with pytest.raises(ValueError, match="num_samples"):
        cc.SmoothGradCAMpp(model, "features.4", num_samples=0)
    with pytest.raises(ValueError, match="std"):
        cc.SmoothGradCAMpp(model, "features.4", std=-1.0)
    with pytest.raises(ValueError, match="generator"):
        cc.SmoothGradCAMpp(model, "features.4", generator=torch.device("meta"))


# ---------------------------------------------------------------- RefineCAM

REFINE_LAYERS = {"PlainNet": ["features.1", "features.4", "features.7"], "BenchNet": ["layer2", "layer3", "expand"]}


def test_refinecam_matches_both_peers(arch, x):
    from torchcam.methods import GradCAM, RefineCAM

    model = arch[0]
    layers = REFINE_LAYERS[type(model).__name__]
    lib = gradcam_lib()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer = lib.RefineCAM(model, [dict(model.named_modules())[name] for name in layers])  # base: Grad-CAM++
    try:
        theirs = torch.from_numpy(peer(x, [ClassifierOutputTarget(t) for t in TARGETS]))
    finally:
        for cam in peer.base_cam_per_layer:
            cam.activations_and_grads.release()
    assert_agrees(cc.RefineCAM(model, layers)(x, TARGETS), theirs)
    with RefineCAM(model, layers, base_method=GradCAM, input_shape=tuple(x.shape[1:])) as extractor:
        theirs = extractor(class_idx=TARGETS, scores=model(x))[0]
    assert_agrees(cc.RefineCAM(model, layers, preset="torchcam", base=cc.GradCAM)(x, TARGETS), theirs)


def test_refinecam_bad_arguments():
    model = PlainNet()
    with pytest.raises(ValueError, match="two target layers"):
        cc.RefineCAM(model, "features.4")
    with pytest.raises(ValueError, match="preset"):
        cc.RefineCAM(model, ["features.1", "features.4"], preset="paper")
    with pytest.raises(TypeError, match="base"):
        cc.RefineCAM(model, ["features.1", "features.4"], base=cc.ScoreCAM)


# ---------------------------------------------------------------- test-time augmentation

# aug_smooth lives in the explainer base: two methods stand for all.
@pytest.mark.parametrize("method,options", [("GradCAM", {}), ("EigenCAM", {"sign": "lapack"})])
def test_aug_smooth_matches_gradcam(arch, x, method, options):
    model, inner, last, negative = arch
    from benchmarks.peers import correlation

    for targets in (TARGETS, None):  # None: each augmented pass explains its own prediction
        theirs = gradcam_maps(method, model, inner, x, targets, aug_smooth=True)
        ours = getattr(cc, method)(model, inner, **options)(x, targets, aug_smooth=True)
        # the mean of the passes is not renormalised, in either library
        assert correlation(ours, theirs) >= CORR and (ours - theirs).abs().max() <= DIFF
    with pytest.raises(TypeError, match="aug_smooth"):
        cc.GradCAM(model, inner)(x, TARGETS, aug_smooth=[(1.0, True)])
    one = cc.GradCAM(model, inner)(x, TARGETS, aug_smooth=[(True, 1.0)])
    torch.testing.assert_close(one, cc.GradCAM(model, inner)(x.flip(-1), TARGETS).flip(-1))


def test_benchmark_cases_run():
    from benchmarks import bench_cam_perturbation

    cases = bench_cam_perturbation.cases(torch.device("cpu"), quick=True)
    assert {c.op for c in cases} >= {"ablation_cam", "ablation_cam[gap-head]", "eigen_cam"}
    for case in cases:
        for provider in case.providers.values():
            provider()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
