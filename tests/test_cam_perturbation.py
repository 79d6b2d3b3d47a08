"""The perturbation and projection methods (Score-CAM, SS-CAM, IS-CAM, AblationCAM, EigenCAM,
EigenGradCAM, FullGrad, SmoothGradCAM++, RefineCAM, test-time augmentation) against the real peers,
and the explainer contract when the model raises mid-call.

grad-cam 1.5.7 and torchcam 0.5.0 are installed in the test environment (`make test`). Each
method runs on two architectures (a plain GAP + FC CNN and a residual net with BatchNorm and
in-place ReLU), two images and two classes per image (camfast explains both in one call, the
peers once per class); agreement means a per-map correlation of at least 0.99999 and a largest
difference of at most 1e-5 after the peer's map is resized to the input and min-maxed.
"""

from __future__ import annotations

import functools
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
    return torch.rand(2, 3, 96, 96)


GRID = torch.tensor([[3, 11], [7, 0]])  # two classes for each of the two images


def per_class(peer, targets: torch.Tensor) -> torch.Tensor:
    """A peer that explains one class per image: maps [N, ...] for targets [N], or [N, T, ...] for
    targets [N, T], one peer call per column."""
    if targets.dim() == 1:
        return peer([int(c) for c in targets])
    return torch.stack([peer([int(c) for c in targets[:, t]]) for t in range(targets.shape[1])], 1)


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
    """grad-cam's maps for targets None, [N] or [N, T] (see `per_class`)."""
    lib = gradcam_lib()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def explain(classes):
        layers = [] if layer is None else [dict(model.named_modules())[layer]]
        cam = getattr(lib, method)(model, layers, **kwargs)
        try:
            classes = None if classes is None else [ClassifierOutputTarget(t) for t in classes]
            return torch.from_numpy(cam(x, classes, aug_smooth=aug_smooth))
        finally:
            cam.activations_and_grads.release()

    return explain(None) if targets is None else per_class(explain, torch.as_tensor(targets))


def torchcam_maps(method: str, model, layer, x, targets, seed: int | None = None, **kwargs) -> torch.Tensor:
    """torchcam's maps (feature resolution) for targets [N] or [N, T]; `seed` seeds torch's global
    generator right before each of its calls, as a user would to reproduce its noise."""
    from torchcam import methods

    def explain(classes):
        with getattr(methods, method)(model, layer, input_shape=tuple(x.shape[1:]), **kwargs) as extractor:
            scores = model(x)
            if seed is not None:
                torch.manual_seed(seed)
            return extractor(class_idx=classes, scores=scores)[0].detach()

    return per_class(explain, torch.as_tensor(targets))


def agreement(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """(smallest per-map correlation, largest difference), the peer's maps at ours' size; maps
    [N, H, W] or [N, T, H, W]."""
    from benchmarks.peers import as_input_maps, correlation

    ours, theirs = ours.flatten(0, -3), theirs.flatten(0, -3)
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
        theirs = gradcam_maps(method, model, layer, x, GRID)
        explainer = getattr(cc, method)(model, layer, sign="lapack")
        assert_agrees(explainer(x, GRID), theirs)
        # The deterministic sign gives, per map, grad-cam's map or the one of the other sign.
        absmax = getattr(cc, method)(model, layer)(x, GRID)
        with monkeypatch.context() as patch:
            patch.setattr(eigen, "first_component", lambda a, sign: -first_component(a, sign))
            flipped = getattr(cc, method)(model, layer)(x, GRID)
        for i, peer in enumerate(theirs.flatten(0, 1)):
            options = [agreement(m.flatten(0, 1)[i:i + 1], peer[None]) for m in (absmax, flipped)]
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
    assert_agrees(explainer(x, GRID), gradcam_maps("AblationCAM", model, inner, x, GRID))
    assert explainer.mode == mode


def test_ablation_gap_shortcut_is_exact(arch, x):
    model, inner, last, negative = arch
    theirs = gradcam_maps("AblationCAM", model, last, x, GRID)
    calls = []
    handle = model.fc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        shortcut = cc.AblationCAM(model, last)
        ours = shortcut(x, GRID)
    finally:
        handle.remove()
    assert shortcut.mode == "gap-linear" and calls == [x.shape[0]]  # the clean forward only
    assert_agrees(ours, theirs)
    forwarded = cc.AblationCAM(model, last, fast=False)
    torch.testing.assert_close(forwarded(x, GRID), ours, atol=1e-5, rtol=1e-5)
    assert forwarded.mode == "fx"


def test_ablation_with_a_head(x):
    torch.manual_seed(0)
    model = resnet()
    head = nn.Sequential(model.layer4, model.expand, model.pool, nn.Flatten(), model.fc)
    explainer = cc.AblationCAM(model, "layer3", head=head)
    assert_agrees(explainer(x, GRID), gradcam_maps("AblationCAM", model, "layer3", x, GRID))
    assert explainer.mode == "head"
    gap = cc.AblationCAM(model, "expand", head=nn.Sequential(model.pool, nn.Flatten(), model.fc))
    gap(x, GRID)
    assert gap.mode == "gap-linear"
    with pytest.raises(ValueError, match="head"):
        cc.AblationCAM(model, "layer3", head=nn.Sequential(model.layer4, model.expand, model.pool,
                                                          nn.Flatten(), nn.Linear(64, 20)))(x, GRID)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_ablation_ratio_matches_gradcam(arch, x, ratio):
    model, inner, last, negative = arch
    explainer = cc.AblationCAM(model, inner, ratio_channels_to_ablate=ratio)
    theirs = gradcam_maps("AblationCAM", model, inner, x, GRID, ratio_channels_to_ablate=ratio)
    assert_agrees(explainer(x, GRID), theirs)


def test_ablation_value_rules(arch, x):
    model, inner, last, negative = arch
    with pytest.raises(ValueError, match="ablation_value='grad-cam-legacy'"):
        cc.AblationCAM(model, negative)(x, GRID)
    for split in (True, False):
        legacy = cc.AblationCAM(model, negative, ablation_value="grad-cam-legacy", split=split)
        assert_agrees(legacy(x, GRID), gradcam_maps("AblationCAM", model, negative, x, GRID))


def test_ablation_skip_connection_around_the_layer(x):
    # A layer inside a residual block: the block's input crosses the cut and feeds the suffix.
    torch.manual_seed(0)
    model = resnet()
    explainer = cc.AblationCAM(model, "layer3.conv1", ablation_value="grad-cam-legacy")
    assert_agrees(explainer(x, GRID), gradcam_maps("AblationCAM", model, "layer3.conv1", x, GRID))
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
    assert_agrees(explainer(x, GRID), gradcam_maps("AblationCAM", model, "features.4", x, GRID))
    assert explainer.mode == "model"


# ---------------------------------------------------------------- FullGrad

def test_fullgrad_matches_gradcam(arch, x):
    model, inner, last, negative = arch
    assert_agrees(cc.FullGrad(model)(x, GRID), gradcam_maps("FullGrad", model, None, x, GRID))


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
    ours = cc.FullGrad(model)(x, [1, 4])
    assert_agrees(ours, gradcam_maps("FullGrad", ordered, None, x, [1, 4]))
    corr, _ = agreement(ours, gradcam_maps("FullGrad", model, None, x, [1, 4]))
    assert corr < 0.999  # grad-cam mis-pairs the reversed model


# ---------------------------------------------------------------- SmoothGradCAM++

def test_smoothgradcampp_reproduces_torchcam_with_a_seed(arch, x):
    model, inner, last, negative = arch
    x = x[:, :, :64, :64]
    for layer in (inner, last):
        theirs = torchcam_maps("SmoothGradCAMpp", model, layer, x, GRID, seed=7, num_samples=3, std=0.2)
        torch.manual_seed(7)
        ours = cc.SmoothGradCAMpp(model, layer, num_samples=3, std=0.2)(x, GRID)
        assert_agrees(ours, theirs)
        seeded = cc.SmoothGradCAMpp(model, layer, num_samples=3, std=0.2, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(seeded(x, GRID), ours)


@pytest.mark.parametrize("size,batch_size", [(64, 5), (66, 16)])  # H W or batch_size a multiple of 16
def test_sscam_reproduces_torchcam_noise_with_a_seed(size, batch_size):
    torch.manual_seed(0)
    model = PlainNet()
    x = torch.rand(2, 3, size, size)
    options = dict(batch_size=batch_size, num_samples=2, std=2.0)
    with torch.no_grad():
        theirs = torchcam_maps("SSCAM", model, "features.7", x, GRID, seed=4, **options)
    after_theirs = torch.rand(3)  # after torchcam's call for the last class
    torch.manual_seed(4)
    ours = cc.SSCAM(model, "features.7", **options)(x, GRID)  # both classes from the same noise
    assert_agrees(ours, theirs)
    torch.testing.assert_close(torch.rand(3), after_theirs)  # the generator is left where torchcam leaves it
    device = cc.SSCAM(model, "features.7", num_samples=2, std=2.0, noise="device",
                      generator=torch.Generator().manual_seed(4))
    assert agreement(device(x, GRID), theirs)[0] < CORR  # other noise values


# ---------------------------------------------------------------- RefineCAM

REFINE_LAYERS = {"PlainNet": ["features.1", "features.4", "features.7"], "BenchNet": ["layer2", "layer3", "expand"]}


def test_refinecam_matches_both_peers(arch, x):
    from torchcam.methods import GradCAM

    model = arch[0]
    layers = REFINE_LAYERS[type(model).__name__]
    lib = gradcam_lib()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def gradcam_refine(classes):
        peer = lib.RefineCAM(model, [dict(model.named_modules())[name] for name in layers])  # base: Grad-CAM++
        try:
            return torch.from_numpy(peer(x, [ClassifierOutputTarget(t) for t in classes]))
        finally:
            for cam in peer.base_cam_per_layer:
                cam.activations_and_grads.release()

    assert_agrees(cc.RefineCAM(model, layers)(x, GRID), per_class(gradcam_refine, GRID))
    theirs = torchcam_maps("RefineCAM", model, layers, x, GRID, base_method=GradCAM)
    assert_agrees(cc.RefineCAM(model, layers, preset="torchcam", base=cc.GradCAM)(x, GRID), theirs)


# ---------------------------------------------------------------- test-time augmentation

# aug_smooth lives in the explainer base: two methods stand for all. The layer feeding the head
# keeps grad-cam's EigenCAM quick (its SVD builds an hw x hw matrix per image).
@pytest.mark.parametrize("method,options", [("GradCAM", {}), ("EigenCAM", {"sign": "lapack"})])
def test_aug_smooth_matches_gradcam(arch, x, method, options):
    model, inner, last, negative = arch
    from benchmarks.peers import correlation

    for targets in (GRID, None):  # None: each augmented pass explains its own prediction
        theirs = gradcam_maps(method, model, last, x, targets, aug_smooth=True)
        ours = getattr(cc, method)(model, last, **options)(x, targets, aug_smooth=True)
        # the mean of the passes is not renormalised, in either library
        assert correlation(ours, theirs) >= CORR and (ours - theirs).abs().max() <= DIFF
    with pytest.raises(TypeError, match="aug_smooth"):
        cc.GradCAM(model, inner)(x, GRID, aug_smooth=[(1.0, True)])
    one = cc.GradCAM(model, inner)(x, GRID, aug_smooth=[(True, 1.0)])
    torch.testing.assert_close(one, cc.GradCAM(model, inner)(x.flip(-1), GRID).flip(-1))


# ---------------------------------------------------------------- Score-CAM, SS-CAM, IS-CAM

def _seeded(explainer, seed: int):
    """The explainer called right after torch.manual_seed(seed), as torchcam_maps calls its peer."""
    def explain(x, targets):
        torch.manual_seed(seed)
        return explainer(x, targets)

    return explain


# method -> (camfast's explain(x, targets) for a model and layer, the peer's maps)
SCORE_PEERS = {
    "ScoreCAM[grad-cam]": (lambda m, layer: cc.ScoreCAM(m, layer, preset="grad-cam"),
                           lambda m, layer, x, t: gradcam_maps("ScoreCAM", m, layer, x, t)),
    "ScoreCAM[torchcam]": (lambda m, layer: cc.ScoreCAM(m, layer, preset="torchcam"),
                           lambda m, layer, x, t: torchcam_maps("ScoreCAM", m, layer, x, t, batch_size=16)),
    "ISCAM": (lambda m, layer: cc.ISCAM(m, layer, num_samples=3),
              lambda m, layer, x, t: torchcam_maps("ISCAM", m, layer, x, t, num_samples=3)),
    "SSCAM": (lambda m, layer: _seeded(cc.SSCAM(m, layer, num_samples=2, std=0.5), 5),
              lambda m, layer, x, t: torchcam_maps("SSCAM", m, layer, x, t, seed=5, num_samples=2, std=0.5)),
}


@pytest.mark.parametrize("method", sorted(SCORE_PEERS))
def test_score_cam_family_matches_the_peers(arch, x, method):
    model, inner, last, negative = arch
    ours, theirs = SCORE_PEERS[method]
    assert_agrees(ours(model, inner)(x, GRID), theirs(model, inner, x, GRID))


# ---------------------------------------------------------------- every method and path: the contract

def _noisy(cls, **options):
    """A noisy explainer on its own generator, re-seeded before every call so that calls compare."""
    def make(model, inner, last):
        generator = torch.Generator()
        explainer = cls(model, inner, generator=generator, **options)

        def explain(x, targets):
            generator.manual_seed(0)
            return explainer(x, targets)

        return explain

    return make


# Every perturbation and projection method, each of its paths: make(model, a post-ReLU inner
# layer, the layer that feeds GAP -> fc) -> explain(x, targets).
METHODS = {
    "score-official": lambda m, inner, last: cc.ScoreCAM(m, inner),
    "score-torchcam": lambda m, inner, last: cc.ScoreCAM(m, inner, preset="torchcam"),
    "score-grad-cam-plain": lambda m, inner, last: cc.ScoreCAM(m, inner, preset="grad-cam", fast=False),
    "sscam": _noisy(cc.SSCAM, num_samples=2),
    "sscam-device-noise": _noisy(cc.SSCAM, num_samples=2, noise="device"),
    "iscam": lambda m, inner, last: cc.ISCAM(m, inner, num_samples=2),
    "ablation-fx": lambda m, inner, last: cc.AblationCAM(m, inner, batch_size=16),
    "ablation-model": lambda m, inner, last: cc.AblationCAM(m, inner, batch_size=16, split=False),
    "ablation-gap": lambda m, inner, last: cc.AblationCAM(m, last),
    "ablation-ratio": lambda m, inner, last: cc.AblationCAM(m, inner, ratio_channels_to_ablate=0.25,
                                                             ablation_value="grad-cam-legacy"),
    "eigen-fused": lambda m, inner, last: cc.EigenCAM(m, [inner, last]),
    "eigen-lapack": lambda m, inner, last: cc.EigenCAM(m, inner, sign="lapack"),
    "eigengrad": lambda m, inner, last: cc.EigenGradCAM(m, inner),
    "smoothgradcampp": _noisy(cc.SmoothGradCAMpp, num_samples=2),
    "fullgrad": lambda m, inner, last: cc.FullGrad(m),
    "refine": lambda m, inner, last: cc.RefineCAM(m, [inner, last]),
    "aug-smooth": lambda m, inner, last: functools.partial(cc.AblationCAM(m, inner),
                                                           aug_smooth=[(False, 1.0), (True, 0.9)]),
}


class Boom(Exception):
    pass


class _Trip(torch.autograd.Function):
    """The identity, whose backward first calls `trip`."""

    @staticmethod
    def forward(ctx, value, trip):
        ctx.trip = trip
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        ctx.trip()
        return grad, None


class Tripwire:
    """Counts the calls of `module` (a forward hook), the images they carry and the backward passes
    through its output, and raises Boom at the one named by `at` = ("forward" | "backward", n)."""

    def __init__(self, module: nn.Module):
        self.reset()
        self.handle = module.register_forward_hook(self._forward)

    def reset(self, at=None):
        self.at, self.forwards, self.images, self.backwards = at, 0, 0, 0

    def _forward(self, module, inputs, output):
        self.forwards += 1
        self.images += output.shape[0]
        if self.at == ("forward", self.forwards):
            raise Boom
        return _Trip.apply(output, self._backward) if output.requires_grad else None

    def _backward(self):
        self.backwards += 1
        if self.at == ("backward", self.backwards):
            raise Boom


def _unusual_flags(model):
    """Training mode but one module in eval, every other parameter frozen: flags to restore."""
    model.train()
    model.fc.eval()
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 2 == 0)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _state(model) -> dict:
    """What a call must leave as it found it: the modules (the same objects: none replaced), their
    modes and hooks, the parameters' flags and .grad, every parameter and buffer (running
    statistics), the global hooks and the grad mode."""
    from torch.nn.modules import module as module_mod

    return dict(
        modules=[(n, id(m), m.training, [len(getattr(m, h)) for h in _HOOKS]) for n, m in model.named_modules()],
        params=[(p.requires_grad, p.grad is None) for p in model.parameters()],
        values={k: v.clone() for k, v in model.state_dict().items()},
        global_hooks=[len(getattr(module_mod, f"_global{h}")) for h in _HOOKS],
        grad_mode=torch.is_grad_enabled(),
    )


def _assert_state(model, before: dict):
    after = _state(model)
    for key in ("modules", "params", "global_hooks", "grad_mode"):
        assert after[key] == before[key], key
    assert all(torch.equal(after["values"][k], v) for k, v in before["values"].items())


@pytest.fixture
def wired(arch, request):
    """(model, x, the explainer of METHODS[method], a Tripwire on the model's classifier)."""
    model, inner, last, negative = arch
    wire = Tripwire(model.fc)
    yield model, torch.rand(2, 3, 32, 32), METHODS[request.node.callspec.params["method"]](model, inner, last), wire
    wire.handle.remove()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_model_raising_mid_call_is_left_as_it_was(wired, method):
    # The model raises at its first forward, at one in the middle, at the last one, and in the
    # first and the last backward; each time the model is left as it was and the explainer
    # still gives the map of an undisturbed call.
    model, x, explain, wire = wired
    expected = explain(x, GRID)
    trips = {("forward", n) for n in (1, (wire.forwards + 1) // 2, wire.forwards)}
    trips |= {("backward", n) for n in (1, wire.backwards)} if wire.backwards else set()
    _unusual_flags(model)
    for at in sorted(trips):
        before, image = _state(model), x.clone()
        wire.reset(at)
        with pytest.raises(Boom):
            explain(x, GRID)
        _assert_state(model, before)
        assert torch.equal(x, image) and not x.requires_grad
    wire.reset()
    torch.testing.assert_close(explain(x, GRID), expected)


# The methods that score masked or ablated inputs: each forward is scored for every class.
SCORED = [m for m in METHODS if m.startswith(("score", "sscam", "iscam", "ablation"))]


@pytest.mark.parametrize("method", SCORED)
def test_several_classes_cost_the_forwards_of_one(wired, method):
    model, x, explain, wire = wired
    both = explain(x, GRID)
    cost = (wire.forwards, wire.images)
    for t in range(GRID.shape[1]):
        wire.reset()
        torch.testing.assert_close(both[:, t], explain(x, GRID[:, t]), atol=1e-5, rtol=1e-5)
        assert (wire.forwards, wire.images) == cost


# (call(model, x), the error, what its message names, whether the model may run first: only
# errors that depend on its output)
BAD = [
    *[(lambda m, x, r=r: cc.AblationCAM(m, "features.4", ratio_channels_to_ablate=r), ValueError,
       "ratio_channels_to_ablate", False) for r in (0, 1.5, True, "half")],
    (lambda m, x: cc.AblationCAM(m, "features.4", ablation_value="min"), ValueError, "ablation_value", False),
    (lambda m, x: cc.AblationCAM(m, "features.4", head=3), TypeError, "head", False),
    (lambda m, x: cc.AblationCAM(m, "features.4", batch_size=0), ValueError, "batch_size", False),
    (lambda m, x: cc.AblationCAM(m, "features.3")(x), ValueError, "ablation_value='grad-cam-legacy'", True),
    (lambda m, x: cc.AblationCAM(m, "features.7")(x, [[0, 12], [1, 2]]), ValueError, r"targets must lie", True),
    (lambda m, x: cc.AblationCAM(m, "features.4", head=m.fc)(x), ValueError, "head", True),
    (lambda m, x: cc.ScoreCAM(m, "features.4", max_channels=0), ValueError, "max_channels", False),
    (lambda m, x: cc.ScoreCAM(m, "features.4", score="rank"), ValueError, "score", False),
    (lambda m, x: cc.ScoreCAM(m, "features.4", normalize_stage="input"), ValueError, "normalize_stage", False),
    (lambda m, x: cc.ScoreCAM(m, "features.4", combine="sum"), ValueError, "combine", False),
    (lambda m, x: cc.ScoreCAM(m, "features.4", baseline=torch.zeros(3, 3, dtype=torch.long)), TypeError,
     "baseline", False),
    (lambda m, x: cc.ScoreCAM(m, "features.4", baseline=torch.zeros(3, 16, 16))(x), ValueError, "baseline", False),
    (lambda m, x: cc.ScoreCAM(m, "features.4", reshape_transform="grid"), ValueError, "reshape_transform", False),
    (lambda m, x: cc.SSCAM(m, "features.4", num_samples=0), ValueError, "num_samples", False),
    (lambda m, x: cc.SSCAM(m, "features.4", std=0), ValueError, "std", False),
    (lambda m, x: cc.SSCAM(m, "features.4", generator=torch.device("cpu")), ValueError, "generator", False),
    (lambda m, x: cc.SSCAM(m, "features.4", noise="gpu"), ValueError, "noise", False),
    (lambda m, x: cc.ISCAM(m, "features.4", num_samples=1.5), ValueError, "num_samples", False),
    (lambda m, x: cc.EigenCAM(m, "features.4", sign="svd"), ValueError, "sign", False),
    (lambda m, x: cc.EigenCAM(m, ["features.1", "features.4"], fuse="sum"), ValueError, "fuse", False),
    (lambda m, x: cc.EigenGradCAM(m, "features.4", sign="positive"), ValueError, "sign", False),
    (lambda m, x: cc.EigenCAM(m, "features.4")(x, [0, 12]), ValueError, r"targets must lie", True),
    (lambda m, x: cc.SmoothGradCAMpp(m, "features.4", num_samples=0), ValueError, "num_samples", False),
    (lambda m, x: cc.SmoothGradCAMpp(m, "features.4", std=-1.0), ValueError, "std", False),
    (lambda m, x: cc.SmoothGradCAMpp(m, "features.4", generator=torch.device("meta")), ValueError, "generator",
     False),
    (lambda m, x: cc.FullGrad("features.4"), TypeError, "model", False),  # a layer where the model goes
    (lambda m, x: cc.FullGrad(m, score=3), TypeError, "score", False),
    (lambda m, x: cc.FullGrad(m)(x, [[1], [2], [3]]), ValueError, "targets", False),
    (lambda m, x: cc.RefineCAM(m, "features.4"), ValueError, "two target layers", False),
    (lambda m, x: cc.RefineCAM(m, ["features.1", "features.4"], preset="paper"), ValueError, "preset", False),
    (lambda m, x: cc.RefineCAM(m, ["features.1", "features.4"], base=cc.ScoreCAM), TypeError, "base", False),
    (lambda m, x: cc.EigenCAM(m, "features.4")(x, aug_smooth=[(1.0, True)]), TypeError, "aug_smooth", False),
    (lambda m, x: cc.AblationCAM(m, "features.4")(x[0]), ValueError, "x", False),
]


@pytest.mark.parametrize("call,error,match,runs", BAD)
def test_bad_input_names_the_argument(call, error, match, runs):
    torch.manual_seed(0)
    model = PlainNet()
    _unusual_flags(model)
    wire = Tripwire(model.features[0])
    try:
        before = _state(model)
        with pytest.raises(error, match=match):
            call(model, torch.rand(2, 3, 32, 32))
        _assert_state(model, before)
        assert runs or wire.forwards == 0  # raised before the model ran
    finally:
        wire.handle.remove()


def test_benchmark_cases_run():
    from benchmarks import bench_cam_perturbation

    cases = bench_cam_perturbation.cases(torch.device("cpu"), quick=True)
    assert {c.op for c in cases} >= {"ablation_cam", "ablation_cam[gap-head]", "eigen_cam"}
    for case in cases:
        for provider in case.providers.values():
            provider()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
