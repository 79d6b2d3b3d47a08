"""camfast.cam explainers against small independent re-implementations of each source.

The re-implementations below are written from the descriptions of the authors' code, grad-cam
1.5.7 and torchcam 0.5.0 (their Score-CAM, Grad-CAM, Grad-CAM++ and CAM), per map and without hooks: the
model is split into `features` (up to the target layer) and `head`.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camfast.cam as cc


class TinyNet(nn.Module):
    """conv-relu, then "features" (conv-BN-ReLU, 16 maps at 8x8 for a 32x32 input, three of them dead,
    i.e. constant), GAP, fc with a large gain so that the class scores are not flat."""

    def __init__(self, classes: int = 10, dead: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.features = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16),
                                      nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)
        with torch.no_grad():
            self.fc.weight.mul_(30)
            self.features[1].running_mean.uniform_(-0.2, 0.2)
            self.features[1].bias[:dead] = -100.0
        self.eval()

    def head(self, a):
        return self.fc(self.pool(a).flatten(1))

    def forward(self, x):
        return self.head(self.features(self.stem(x)))


@pytest.fixture
def net():
    return TinyNet()


@pytest.fixture
def x():
    return torch.rand(3, 3, 32, 32)


def features(net, x):
    return net.features(net.stem(x))


def corr(a, b):
    """The smallest per-image Pearson correlation of two batches of maps."""
    return min(torch.corrcoef(torch.stack([u.flatten().double(), v.flatten().double()]))[0, 1].item()
               for u, v in zip(a, b))


def minmax(m, eps=0.0):
    lo = m.amin((-2, -1), keepdim=True)
    hi = m.amax((-2, -1), keepdim=True)
    return (m - lo) / (hi - lo + eps) if eps else torch.where(hi > lo, (m - lo) / (hi - lo), torch.zeros_like(m))


def upsample(m, size, align_corners=False):
    return F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=align_corners)[:, 0]


def to_image(raw, size):
    return minmax(upsample(raw, size))


# ---------------------------------------------------------------- independent re-implementations

def ref_gradients(net, x, target):
    a = features(net, x).detach().requires_grad_()
    logits = net.head(a)
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    return a.detach(), g


def ref_gradcam(net, x, target):
    a, g = ref_gradients(net, x, target)
    return (g.mean((2, 3))[:, :, None, None] * a).sum(1).relu()


def ref_gradcampp_official(net, x, target):
    """Authors' TF code, float64, including the exp(y_c) factor."""
    a, g = (t.double() for t in ref_gradients(net, x, target))
    y = net(x).gather(1, target[:, None]).double()[:, :, None, None]
    e = torch.exp(y)
    first, second, third = e * g, e * g ** 2, e * g ** 3
    denom = 2 * second + third * a.sum((2, 3), keepdim=True)
    alphas = second / torch.where(denom != 0, denom, 1.0)
    alphas = alphas / alphas.sum((2, 3), keepdim=True)
    weights = (alphas.nan_to_num() * first.clamp_min(0)).sum((2, 3))
    return (weights[:, :, None, None] * a).sum(1).relu()


def ref_gradcampp_gradcam(net, x, target):
    a, g = ref_gradients(net, x, target)
    aij = g ** 2 / (2 * g ** 2 + a.sum((2, 3), keepdim=True) * g ** 3 + 1e-6)
    aij = torch.where(g != 0, aij, 0.0)
    return ((g.clamp_min(0) * aij).sum((2, 3))[:, :, None, None] * a).sum(1).relu()


@torch.no_grad()
def ref_scorecam_official(net, x, target):
    """haofanwang/Score-CAM: one image, one channel at a time, probabilities, skip constant maps."""
    out = []
    for n in range(x.shape[0]):
        img, c = x[n:n + 1], int(target[n])
        a = features(net, img)
        cam = torch.zeros(1, 1, *x.shape[2:])
        for k in range(a.shape[1]):
            u = F.interpolate(a[:, k:k + 1], size=x.shape[2:], mode="bilinear", align_corners=False)
            if u.max() == u.min():
                continue
            m = (u - u.min()) / (u.max() - u.min())
            score = F.softmax(net(img * m), dim=1)[0, c]
            cam += score * u
        cam = F.relu(cam)
        out.append(((cam - cam.min()) / (cam.max() - cam.min()))[0, 0])
    return torch.stack(out)


@torch.no_grad()
def ref_scorecam_torchcam_raw(net, x, target, bs=5, keep=None):
    """torchcam 0.5.0 ScoreCAM up to ReLU(sum w A) at feature resolution.

    keep: camfast's max_channels approximation, written without topk and gather: all maps are
    scored, then every map outside the `keep` largest sum |A| of its image gets weight 0 (the
    channel softmax runs over the kept maps alone).
    """
    a = features(net, x)
    n, k = a.shape[:2]
    norm = a - a.amin((2, 3), keepdim=True)
    norm = norm / (norm.amax((2, 3), keepdim=True) + 1e-8)
    masks = F.interpolate(norm.flatten(0, 1)[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)
    owner = torch.arange(n).repeat_interleave(k)
    base = net(x).gather(1, target[:, None])[:, 0]
    scores = torch.cat([net(masks[s:s + bs] * x[owner[s:s + bs]]).gather(1, target[owner[s:s + bs], None])[:, 0]
                        for s in range(0, n * k, bs)])
    scores = (scores - base[owner]).view(n, k)
    if keep is not None:
        ranked = a.abs().sum((2, 3)).argsort(dim=1, descending=True)
        dropped = torch.ones(n, k, dtype=torch.bool).scatter(1, ranked[:, :keep], False)
        scores = scores.masked_fill(dropped, float("-inf"))
    w = torch.softmax(scores, dim=1)
    return (w[:, :, None, None] * a).sum(1).relu()


@torch.no_grad()
def ref_scorecam_gradcam_raw(net, x, target):
    """grad-cam 1.5.7 ScoreCAM up to ReLU(sum w A) at feature resolution."""
    a = features(net, x)
    up = F.interpolate(a, size=x.shape[2:], mode="bilinear", align_corners=True)
    lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
    masks = (up - lo) / (hi - lo + 1e-8)
    scores = torch.stack([net(x[i:i + 1] * masks[i][:, None]).gather(1, target[i].expand(a.shape[1], 1))[:, 0]
                          for i in range(x.shape[0])])
    w = torch.softmax(scores, dim=1)
    return (w[:, :, None, None] * a).sum(1).relu()


def gradcam_lib_finish(raw, size):
    """grad-cam's scale_cam_image: (x - min) / (max + 1e-7) at feature res, resize, min-max again."""
    m = raw - raw.amin((1, 2), keepdim=True)
    m = m / (m.amax((1, 2), keepdim=True) + 1e-7)
    return minmax(upsample(m, size), eps=1e-7)


@torch.no_grad()
def ref_iscam_raw(net, x, target, samples=10):
    """torchcam 0.5.0 ISCAM (cumulative coefficients) up to ReLU(sum w A)."""
    a = features(net, x)
    norm = a - a.amin((2, 3), keepdim=True)
    norm = norm / (norm.amax((2, 3), keepdim=True) + 1e-8)
    masks = F.interpolate(norm, size=x.shape[2:], mode="bilinear", align_corners=False)
    base = net(x).gather(1, target[:, None])
    total = torch.zeros(a.shape[:2])
    coeff = 0.0
    for i in range(samples):
        coeff += (i + 1) / samples
        for n in range(x.shape[0]):
            total[n] += net(coeff * masks[n][:, None] * x[n]).gather(1, target[n].expand(a.shape[1], 1))[:, 0] - base[n]
    w = torch.softmax(total / samples, dim=1)
    return (w[:, :, None, None] * a).sum(1).relu()


TARGETS = torch.tensor([1, 7, 4])


# ---------------------------------------------------------------- gradient methods and CAM

def test_gradcam_matches_reference(net, x):
    out = cc.GradCAM(net, "features")(x, TARGETS)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out, to_image(ref_gradcam(net, x, TARGETS), (32, 32)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant,ref", [("official", ref_gradcampp_official), ("grad-cam", ref_gradcampp_gradcam)])
def test_gradcampp_matches_reference(net, x, variant, ref):
    out = cc.GradCAMPlusPlus(net, net.features, variant=variant)(x, TARGETS)
    expected = to_image(ref(net, x, TARGETS).float(), (32, 32))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("nwc,relu", [(False, False), (True, False), (False, True)])
def test_cam_matches_reference(net, x, nwc, relu):
    a = features(net, x)
    w = net.fc.weight[TARGETS]
    w = w.clamp_min(0) if nwc else w
    raw = (w[:, :, None, None] * a).sum(1)
    raw = raw.relu() if relu else raw
    out = cc.CAM(net, "features", nwc=nwc, relu=relu)(x, TARGETS)
    torch.testing.assert_close(out, to_image(raw.detach(), (32, 32)), atol=1e-5, rtol=1e-5)


# Each method's raw map from the target layer's activation a and gradient g (TinyNet's
# "features": GAP -> fc follows it).
GRADIENT_REFS = [
    pytest.param(lambda net: cc.HiResCAM(net, "features"), lambda a, g: (g * a).sum(1).relu(), id="hirescam"),
    pytest.param(lambda net: cc.GradCAMElementWise(net, "features"), lambda a, g: (g * a).clamp_min(0).sum(1),
                 id="gradcam-elementwise"),
    pytest.param(lambda net: cc.XGradCAM(net, "features"),
                 lambda a, g: ((g * a).sum((2, 3)) / (a.sum((2, 3)) + 1e-6))[:, :, None, None].mul(a).sum(1).relu(),
                 id="xgradcam"),
    pytest.param(lambda net: cc.LayerCAM(net, "features"), lambda a, g: (g.clamp_min(0) * a).sum(1).relu(),
                 id="layercam"),
]


@pytest.mark.parametrize("make,ref", GRADIENT_REFS)
def test_gradient_methods_match_their_formula(net, x, make, ref):
    a, g = ref_gradients(net, x, TARGETS)
    torch.testing.assert_close(make(net)(x, TARGETS), to_image(ref(a, g), (32, 32)), atol=1e-5, rtol=1e-5)


def test_fem_matches_its_formula(net, x):
    a = features(net, x).detach()
    threshold = a.mean((2, 3), keepdim=True) + 2 * a.std((2, 3), unbiased=False, keepdim=True)
    w = (a > threshold).double().mean((2, 3)).float()
    expected = to_image((w[:, :, None, None] * a).sum(1).relu(), (32, 32))
    torch.testing.assert_close(cc.FEM(net, "features")(x, TARGETS), expected, atol=1e-5, rtol=1e-5)


def test_shapleycam_second_order_term_by_finite_differences(net, x):
    """g - H A / 2 with H A from central differences of the gradient along A (float64), for the
    ReST objective y_c + log softmax(y)_c, which is curved in A although the head is linear."""
    wide = copy.deepcopy(net).double()
    a = features(wide, x.double()).detach()

    def grad(act):
        act = act.detach().requires_grad_()
        logits = wide.head(act)
        rest = logits.gather(1, TARGETS[:, None]) + logits.log_softmax(1).gather(1, TARGETS[:, None])
        return torch.autograd.grad(rest.sum(), act)[0]

    step = 1e-4
    hessian_a = (grad(a + step * a) - grad(a - step * a)) / (2 * step)
    w = (grad(a) - hessian_a / 2).mean((2, 3))
    expected = to_image((w[:, :, None, None] * a).sum(1).relu().float(), (32, 32))
    out = cc.ShapleyCAM(net, "features", objective="rest")(x, TARGETS)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert (out - cc.GradCAM(net, "features")(x, TARGETS)).abs().max() > 1e-2  # the term matters here
    # With the logit, this head is linear in A: H A = 0, and ShapleyCAM is Grad-CAM.
    torch.testing.assert_close(cc.ShapleyCAM(net, "features")(x, TARGETS), cc.GradCAM(net, "features")(x, TARGETS))


@pytest.mark.parametrize("preset", ["official", "torchcam"])
def test_finercam_objective(net, x, preset):
    """Grad-CAM of the contrastive objective, written per image with NumPy's ordering."""
    logits = net(x).detach()
    alpha = {"official": 1.0, "torchcam": 0.6}[preset]
    a = features(net, x).detach().requires_grad_()
    y = net.head(a)
    total = 0
    for n, c in enumerate(TARGETS.tolist()):
        order = (logits[n] - logits[n, c]).abs().numpy().argsort(kind="stable")
        refs = [int(j) for j in order if j != c][:3]
        if preset == "torchcam":
            total = total + y[n, c] - alpha * y[n, refs].mean()
        else:
            p = y[n].softmax(0)[refs]
            total = total + (p * (y[n, c] - alpha * y[n, refs])).sum() / (p.sum() + 1e-9)
    (g,) = torch.autograd.grad(total, a)
    expected = to_image((g.mean((2, 3))[:, :, None, None] * a).sum(1).relu().detach(), (32, 32))
    torch.testing.assert_close(cc.FinerCAM(net, "features", preset=preset)(x, TARGETS), expected, atol=1e-5, rtol=1e-5)


def test_presets_and_their_overrides(net):
    assert cc.XGradCAM(net, "features", preset="grad-cam").eps == 1e-7
    assert cc.XGradCAM(net, "features", preset="torchcam", eps=1e-3).eps == 1e-3
    assert cc.XGradCAM(net, "features", preset="torchcam").fuse == "max"
    assert cc.LayerCAM(net, "features", preset="grad-cam").scale is None
    assert cc.LayerCAM(net, "features", preset="grad-cam", scale="tanh").scale is not None
    finer = cc.FinerCAM(net, "features", preset="torchcam", alpha=0.3, base=cc.LayerCAM)
    assert (finer.alpha, finer.weighting, finer.base.fuse) == (0.3, "mean", "max")
    assert "preset='torchcam', base=LayerCAM" in repr(finer)
    for call, error, match in [
        (lambda: cc.XGradCAM(net, "features", preset="paper"), ValueError, "preset"),
        (lambda: cc.LayerCAM(net, "features", scale="sigmoid"), ValueError, "scale"),
        (lambda: cc.ShapleyCAM(net, "features", objective="prob"), ValueError, "objective"),
        (lambda: cc.ShapleyCAM(net, "features", objective="rest", score=lambda o, t: o[:, 0]), TypeError, "score"),
        (lambda: cc.FinerCAM(net, "features", weighting="max"), ValueError, "weighting"),
        (lambda: cc.FinerCAM(net, "features", num_references=0), ValueError, "num_references"),
        (lambda: cc.FinerCAM(net, "features", base=cc.ScoreCAM), TypeError, "base"),
        (lambda: cc.FinerCAM(net, "features", score=lambda o, t: o[:, 0]), TypeError, "score"),
        (lambda: cc.FEM(net, "features", k="2"), TypeError, "k"),
    ]:
        with pytest.raises(error, match=match):
            call()


def test_cam_needs_a_classifier():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="fc"):
        cc.CAM(model, "0")
    with pytest.raises(TypeError, match="fc"):
        cc.CAM(model, "0", fc="0")


# ---------------------------------------------------------------- Score-CAM presets

def test_scorecam_official_matches_authors_code(net, x):
    out = cc.ScoreCAM(net, "features", batch_size=7)(x, TARGETS)
    torch.testing.assert_close(out, ref_scorecam_official(net, x, TARGETS), atol=1e-5, rtol=1e-5)


def test_scorecam_torchcam_preset(net, x):
    out = cc.ScoreCAM(net, "features", preset="torchcam", batch_size=7)(x, TARGETS)
    raw = ref_scorecam_torchcam_raw(net, x, TARGETS)
    torch.testing.assert_close(out, to_image(raw, (32, 32)), atol=1e-5, rtol=1e-5)
    native = minmax(raw, eps=1e-8)  # torchcam's output: feature resolution
    assert corr(out, upsample(native, (32, 32))) > 0.999


def test_scorecam_gradcam_preset(net, x):
    out = cc.ScoreCAM(net, "features", preset="grad-cam", batch_size=7)(x, TARGETS)
    raw = ref_scorecam_gradcam_raw(net, x, TARGETS)
    torch.testing.assert_close(out, to_image(raw, (32, 32)), atol=1e-5, rtol=1e-5)
    assert corr(out, gradcam_lib_finish(raw, (32, 32))) > 0.999


@pytest.mark.parametrize("preset", ["official", "torchcam", "grad-cam"])
def test_scorecam_fast_path_is_exact(net, x, preset):
    fast = cc.ScoreCAM(net, "features", preset=preset, batch_size=5)(x, TARGETS)
    plain = cc.ScoreCAM(net, "features", preset=preset, batch_size=5, fast=False)(x, TARGETS)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_scorecam_shares_one_forward_for_constant_maps(net, x):
    calls = []
    net.fc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    cc.ScoreCAM(net, "features", preset="torchcam", batch_size=100)(x, TARGETS)
    a = features(net, x)
    dead = int((a.amax((2, 3)) == a.amin((2, 3))).sum())
    assert dead >= 3 * x.shape[0]  # three dead channels per image, and a few more
    # the image batch, the non-constant maps in one chunk, one zero image
    assert calls == [3, 16 * 3 - dead, 1]
    calls.clear()
    cc.ScoreCAM(net, "features", batch_size=100)(x, TARGETS)  # official: constant maps skipped
    assert calls == [3, 16 * 3 - dead]


def test_scorecam_flags_override_preset(net):
    cam = cc.ScoreCAM(net, "features", preset="grad-cam", align_corners=False, score="prob")
    assert (cam.align_corners, cam.score, cam.channel_softmax) == (False, "prob", True)
    assert "preset='grad-cam'" in repr(cam)


def test_scorecam_baselines(net, x):
    # Under the channel softmax a per-image baseline cancels; without it, it shifts the weights.
    soft = [cc.ScoreCAM(net, "features", preset="torchcam", baseline=b)(x, TARGETS)
            for b in ("none", "input", "zeros", torch.rand(3, 32, 32))]
    for other in soft[1:]:
        torch.testing.assert_close(other, soft[0], atol=1e-5, rtol=1e-5)
    plain = cc.ScoreCAM(net, "features", score="logit", baseline="none")(x, TARGETS)
    shifted = cc.ScoreCAM(net, "features", score="logit", baseline="input")(x, TARGETS)
    assert not torch.allclose(plain, shifted)


def test_scorecam_options_keep_the_map(net, x):
    base = cc.ScoreCAM(net, "features", preset="torchcam")(x, TARGETS)
    torch.testing.assert_close(cc.ScoreCAM(net, "features", preset="torchcam", channels_last=True)(x, TARGETS),
                               base, atol=1e-5, rtol=1e-5)
    # Dropping only the three dead (all-zero) maps scales every live weight of an image alike.
    torch.testing.assert_close(cc.ScoreCAM(net, "features", preset="torchcam", max_channels=13)(x, TARGETS),
                               base, atol=1e-5, rtol=1e-5)
    low = cc.ScoreCAM(net, "features", preset="torchcam", autocast=torch.bfloat16)(x, TARGETS)
    assert corr(low, base) > 0.99
    with_bar = cc.ScoreCAM(net, "features", preset="torchcam", progress=True)(x, TARGETS)
    torch.testing.assert_close(with_bar, base)


def test_scorecam_max_channels_weighs_only_the_largest_maps(net, x):
    """max_channels=6 of 16 maps: the approximation against a reference that zeroes the others."""
    approx = cc.ScoreCAM(net, "features", preset="torchcam", max_channels=6)(x, TARGETS)
    expected = to_image(ref_scorecam_torchcam_raw(net, x, TARGETS, keep=6), (32, 32))
    torch.testing.assert_close(approx, expected, atol=1e-5, rtol=1e-5)
    full = cc.ScoreCAM(net, "features", preset="torchcam")(x, TARGETS)
    assert not torch.allclose(approx, full, atol=1e-3)  # ten live maps really were dropped


def test_iscam_matches_torchcam_form(net, x):
    out = cc.ISCAM(net, "features", batch_size=9)(x, TARGETS)
    torch.testing.assert_close(out, to_image(ref_iscam_raw(net, x, TARGETS), (32, 32)), atol=1e-5, rtol=1e-5)


def test_sscam(net, x):
    tiny = cc.SSCAM(net, "features", num_samples=3, std=1e-7)(x, TARGETS)
    torch.testing.assert_close(tiny, cc.ScoreCAM(net, "features", preset="torchcam")(x, TARGETS),
                               atol=1e-4, rtol=1e-4)
    runs = [cc.SSCAM(net, "features", num_samples=4, generator=torch.Generator().manual_seed(3))(x, TARGETS)
            for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])
    assert cc.SSCAM(net, "features").samples == 35 and cc.SSCAM(net, "features").std == 2.0
    assert cc.ISCAM(net, "features").samples == 10


# ---------------------------------------------------------------- the explainer contract

ALL = [
    pytest.param(lambda m, layer: cc.CAM(m, layer), id="cam"),
    pytest.param(lambda m, layer: cc.GradCAM(m, layer), id="gradcam"),
    pytest.param(lambda m, layer: cc.GradCAMPlusPlus(m, layer), id="gradcampp"),
    pytest.param(lambda m, layer: cc.GradCAMPlusPlus(m, layer, variant="grad-cam"), id="gradcampp-gc"),
    pytest.param(lambda m, layer: cc.ScoreCAM(m, layer, batch_size=8), id="score-official"),
    pytest.param(lambda m, layer: cc.ScoreCAM(m, layer, preset="torchcam", batch_size=8), id="score-torchcam"),
    pytest.param(lambda m, layer: cc.ScoreCAM(m, layer, preset="grad-cam", batch_size=8), id="score-gradcam"),
    pytest.param(lambda m, layer: cc.SSCAM(m, layer, num_samples=2), id="sscam"),
    pytest.param(lambda m, layer: cc.ISCAM(m, layer, num_samples=2), id="iscam"),
    # perturbation and projection methods
    pytest.param(lambda m, layer: cc.AblationCAM(m, layer, batch_size=7), id="ablation"),
    pytest.param(lambda m, layer: cc.AblationCAM(m, layer, batch_size=7, split=False), id="ablation-model"),
    pytest.param(lambda m, layer: cc.AblationCAM(m, "stem", batch_size=7), id="ablation-fx"),
    pytest.param(lambda m, layer: cc.EigenCAM(m, layer), id="eigen"),
    pytest.param(lambda m, layer: cc.EigenGradCAM(m, layer), id="eigengrad"),
    pytest.param(lambda m, layer: cc.SmoothGradCAMpp(m, layer, num_samples=2), id="smoothgradcampp"),
    pytest.param(lambda m, layer: cc.FullGrad(m), id="fullgrad"),
    pytest.param(lambda m, layer: cc.RefineCAM(m, ["stem", layer]), id="refinecam"),
    # the gradient family
    pytest.param(lambda m, layer: cc.HiResCAM(m, layer), id="hirescam"),
    pytest.param(lambda m, layer: cc.GradCAMElementWise(m, layer), id="gradcam-elementwise"),
    pytest.param(lambda m, layer: cc.XGradCAM(m, layer), id="xgradcam"),
    pytest.param(lambda m, layer: cc.LayerCAM(m, ["stem", layer]), id="layercam-2-layers"),
    pytest.param(lambda m, layer: cc.ShapleyCAM(m, layer, objective="rest"), id="shapleycam-rest"),
    pytest.param(lambda m, layer: cc.FEM(m, layer), id="fem"),
    pytest.param(lambda m, layer: cc.FinerCAM(m, layer), id="finercam"),
    pytest.param(lambda m, layer: cc.FinerCAM(m, layer, preset="torchcam", base=cc.LayerCAM), id="finercam-torchcam"),
    pytest.param(lambda m, layer: cc.FullyCAM(m), id="fullycam"),
    pytest.param(lambda m, layer: cc.FullyCAM(m, ["stem", layer], fuse="max", scale="tanh"), id="fullycam-max"),
]


# SS-CAM and Smooth Grad-CAM++ draw fresh noise per call, so a batch and its images one by one see
# different noise.
DETERMINISTIC = [p for p in ALL if p.id not in ("sscam", "smoothgradcampp")]


@pytest.mark.parametrize("make", DETERMINISTIC)
def test_batch_with_different_targets_equals_single_images(net, x, make):
    explainer = make(net, "features")
    batch = explainer(x, TARGETS)
    single = torch.cat([explainer(x[i:i + 1], [int(TARGETS[i])]) for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)
    assert batch.shape == (3, 32, 32) and batch.min() >= 0 and batch.max() <= 1


@pytest.mark.parametrize("make", ALL)
def test_predicted_class_by_default(net, x, make):
    explainer = make(net, "features")
    torch.manual_seed(1)
    default = explainer(x)
    torch.manual_seed(1)
    torch.testing.assert_close(default, explainer(x, net(x).argmax(1)))


@pytest.mark.parametrize("make", ALL)
def test_model_state_and_hooks_restored(net, x, make):
    net.train()
    net.fc.weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in net.named_parameters()}
    with make(net, net.features) as explainer:
        out = explainer(x, TARGETS)
    assert out.device == x.device
    assert net.training and all(m.training for m in net.modules())
    assert {n: p.requires_grad for n, p in net.named_parameters()} == before
    assert all(p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in net.modules())
    assert not x.requires_grad


class Boom(Exception):
    pass


@pytest.mark.parametrize("make", ALL)
def test_hooks_removed_and_state_restored_on_error(net, x, make):
    net.train()
    explainer = make(net, "features")
    handle = net.fc.register_forward_hook(lambda *args: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom):
        explainer(x, TARGETS)
    handle.remove()
    assert all(m.training for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="targets"):
        explainer(x, [1, 2])  # one class per image, never truncated
    assert all(m.training for m in net.modules()) and not any(m._forward_hooks for m in net.modules())


@contextlib.contextmanager
def _no_host_reads():
    """Fail on the tensor-to-host conversions a sync would need (.item(), NumPy, bool())."""
    names = ["item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"]
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(self, *args, **kwargs):
        raise AssertionError("host read inside an explainer")

    try:
        for n in names:
            setattr(torch.Tensor, n, refuse)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


@pytest.mark.parametrize("make", ALL)
def test_no_host_reads(net, x, make):
    explainer = make(net, "features")
    targets = TARGETS.clone()
    with _no_host_reads():
        explainer(x, targets)
        explainer(x)


def test_in_place_relu_after_the_layer(net, x):
    # The activation is the layer's output, not what the in-place ReLU after it makes of it.
    b = net.features[:2](net.stem(x)).detach().requires_grad_()
    logits = net.head(b.relu())
    (g,) = torch.autograd.grad(logits.gather(1, TARGETS[:, None]).sum(), b)
    expected = to_image((g.mean((2, 3))[:, :, None, None] * b).sum(1).relu().detach(), (32, 32))
    torch.testing.assert_close(cc.GradCAM(net, "features.1")(x, TARGETS), expected, atol=1e-5, rtol=1e-5)


def test_layer_by_dotted_name_and_bad_layers(net, x):
    by_name = cc.GradCAM(net, "features.2")(x, TARGETS)
    torch.testing.assert_close(by_name, cc.GradCAM(net, net.features)(x, TARGETS))
    with pytest.raises(ValueError, match="target_layer 'featurs'"):
        cc.GradCAM(net, "featurs")
    with pytest.raises(ValueError, match="submodule"):
        cc.GradCAM(net, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="target_layer"):
        cc.GradCAM(net, 3)
    with pytest.raises(TypeError, match="target_layer 'fc' must output"):
        cc.GradCAM(net, "fc")(x)
    net.spare = nn.Conv2d(16, 16, 1)
    with pytest.raises(ValueError, match="did not run"):
        cc.GradCAM(net, "spare")(x)


def test_bad_arguments(net, x):
    with pytest.raises(TypeError, match="x"):
        cc.GradCAM(net, "features")(x.long())
    with pytest.raises(ValueError, match="x"):
        cc.GradCAM(net, "features")(x[0])
    with pytest.raises(TypeError, match="targets"):
        cc.GradCAM(net, "features")(x, [1.5, 2, 3])
    with pytest.raises(ValueError, match="targets"):
        cc.GradCAM(net, "features")(x, [1, 2, 99])
    with pytest.raises(ValueError, match="preset"):
        cc.ScoreCAM(net, "features", preset="paper")
    with pytest.raises(ValueError, match="batch_size"):
        cc.ScoreCAM(net, "features", batch_size=0)
    with pytest.raises(ValueError, match="variant"):
        cc.GradCAMPlusPlus(net, "features", variant="torchcam")
    with pytest.raises(ValueError, match="baseline"):
        cc.ScoreCAM(net, "features", baseline="blur")
    with pytest.raises(ValueError, match="autocast"):
        cc.ScoreCAM(net, "features", autocast=torch.int8)


@pytest.mark.parametrize("make", ALL)
def test_empty_batch(net, make):
    out = make(net, "features")(torch.rand(0, 3, 32, 32))
    assert out.shape == (0, 32, 32)


def test_float64_model(net, x):
    wide = copy.deepcopy(net).double()
    out = cc.GradCAM(wide, "features")(x.double(), TARGETS)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), cc.GradCAM(net, "features")(x, TARGETS), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- several classes, several layers, score=

@pytest.mark.parametrize("make", DETERMINISTIC)
def test_classes_per_image_equal_one_call_per_class(net, x, make):
    explainer = make(net, "features")
    grid = torch.tensor([[1, 7], [4, 4], [0, 9]])
    out = explainer(x, grid)
    assert out.shape == (3, 2, 32, 32)
    for t in range(2):
        torch.testing.assert_close(out[:, t], explainer(x, grid[:, t]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explainer(x, grid.tolist()), out)
    one = explainer(x, grid[:, :1])  # a 2-D target keeps its class axis, even for T = 1
    assert one.shape == (3, 1, 32, 32)


def test_score_callable_for_outputs_that_are_not_logits(net, x):
    class DictOut(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"logits": self.net(x), "aux": x.mean()}

    wrapped = DictOut(net)
    seen = []

    def score(out, targets):
        seen.append(targets)
        return out["logits"][:, 3]

    out = cc.GradCAM(wrapped, "net.features", score=score)(x, "anything")
    assert seen == ["anything"]  # targets reach the callable as passed
    torch.testing.assert_close(out, cc.GradCAM(net, "features")(x, 3))
    both = cc.GradCAM(wrapped, "net.features", score=lambda out, t: out["logits"][:, [3, 5]])(x)
    assert both.shape == (3, 2, 32, 32)
    torch.testing.assert_close(both[:, 1], cc.GradCAM(net, "features")(x, 5))


def test_several_layers_fused(net, x):
    a = net.stem(x).detach().requires_grad_()
    (g,) = torch.autograd.grad(net.head(net.features(a)).gather(1, TARGETS[:, None]).sum(), a)
    raws = [(g.mean((2, 3))[:, :, None, None] * a).sum(1).relu().detach(), ref_gradcam(net, x, TARGETS)]
    # grad-cam's rule: per layer (m - min) / (max + 1e-7), resized to the input; the mean; min-max
    scaled = [upsample((m - m.amin((1, 2), keepdim=True)) / ((m - m.amin((1, 2), keepdim=True)).amax((1, 2), keepdim=True)
                                                             + 1e-7), (32, 32)) for m in raws]
    mean = cc.GradCAM(net, ["stem", "features"])(x, TARGETS)
    torch.testing.assert_close(mean, minmax(torch.stack(scaled).mean(0)), atol=1e-5, rtol=1e-5)
    # torchcam's rule: per layer min-max (eps 1e-8) at its size, max at the largest (16 x 16)
    normed = [upsample(minmax(m, eps=1e-8), (16, 16)) for m in raws]
    fused = cc.GradCAM(net, ["stem", "features"], fuse="max")(x, TARGETS)
    torch.testing.assert_close(fused, to_image(torch.maximum(*normed), (32, 32)), atol=1e-5, rtol=1e-5)
    assert "['stem', 'features']" in repr(cc.GradCAM(net, ["stem", "features"]))


class Unused(nn.Module):
    """A model with a layer that runs but does not reach the logits."""

    def __init__(self, net):
        super().__init__()
        self.net, self.side = net, nn.Conv2d(3, 2, 1)

    def forward(self, x):
        self.side(x)
        return self.net(x)


def _assert_clean(net, training=True):
    assert all(m.training == training for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in net.modules())


@pytest.mark.parametrize("call,error,match", [
    (lambda net, x: cc.GradCAM(net, []), ValueError, "at least one layer"),
    (lambda net, x: cc.GradCAM(net, ["features", net.features]), ValueError, "twice"),
    (lambda net, x: cc.ScoreCAM(net, ["stem", "features"]), ValueError, "takes 1 target_layer"),
    (lambda net, x: cc.GradCAM(net, "features")(x, [[1, 2], [3], [0, 0]]), ValueError, "same number"),
    (lambda net, x: cc.GradCAM(net, "features")(x, torch.zeros(3, 2)), TypeError, "integer tensor"),
    (lambda net, x: cc.GradCAM(net, "stem.0", score=lambda out, t: out.argmax(1))(x), TypeError, "score must return"),
    (lambda net, x: cc.GradCAM(net, "stem.0", score=lambda out, t: out.detach()[:, 0])(x), ValueError,
     "score must depend"),
    (lambda net, x: cc.GradCAM(Unused(net), ["net.stem.0", "side"])(x), ValueError,
     "does not depend on target_layer 'side'"),
    (lambda net, x: cc.GradCAM(net, "stem", score=3), TypeError, "score must be a callable"),
])
def test_bad_input_is_reported_with_the_model_restored(net, x, call, error, match):
    net.spare = nn.Conv2d(16, 16, 1)
    net.train()
    with pytest.raises(error, match=match):
        call(net, x)
    _assert_clean(net)


# Every gradient method: make(model, layers, **options).
GRADIENT_METHODS = {
    "gradcam": cc.GradCAM, "gradcampp": cc.GradCAMPlusPlus, "hirescam": cc.HiResCAM,
    "gradcam-elementwise": cc.GradCAMElementWise, "xgradcam": cc.XGradCAM, "layercam": cc.LayerCAM,
    "shapleycam": cc.ShapleyCAM, "fem": cc.FEM, "finercam": cc.FinerCAM, "fullycam": cc.FullyCAM,
}
# What each wrong call must raise: (error, a match naming the argument).
BAD_CALLS = {
    "unknown-layer": (lambda make, net, x: make(net, ["features", "stm"]), ValueError,
                      r"(target_layer|layers)\[1\] 'stm' is not a submodule"),
    "targets-wrong-n": (lambda make, net, x: make(net, "features")(x, torch.zeros(2, 2, dtype=torch.long)),
                        ValueError, "targets must hold classes for each of the 3 images"),
    "targets-out-of-range": (lambda make, net, x: make(net, "features")(x, torch.tensor([[1, 2], [3, 10], [0, 0]])),
                             ValueError, r"targets must lie in \[0, 10\)"),
    "layer-never-runs": (lambda make, net, x: make(net, ["features", "spare"])(x), ValueError,
                         r"(target_layer|layers\[1\]) 'spare' did not run"),
    "score-wrong-shape": (lambda make, net, x: make(net, "stem.0", score=lambda out, t: out[:2, 0])(x), ValueError,
                          r"score must return a Tensor\[N\] or \[N, T\] with N = 3"),
}


@pytest.mark.parametrize("method,case", [(m, c) for m in GRADIENT_METHODS for c in BAD_CALLS
                                         if (m, c) != ("finercam", "score-wrong-shape")])  # takes no score=
def test_gradient_methods_report_bad_input_with_the_model_restored(net, x, method, case):
    call, error, match = BAD_CALLS[case]
    net.spare = nn.Conv2d(16, 16, 1)
    net.train()
    with pytest.raises(error, match=match):
        call(GRADIENT_METHODS[method], net, x)
    _assert_clean(net)


def test_a_layer_that_runs_twice_raises(x):
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    model.train()
    with pytest.raises(ValueError, match="'0' ran twice"):
        cc.GradCAM(model, "0")(x)
    _assert_clean(model)


# ---------------------------------------------------------------- FullyCAM

def test_fullycam_matches_its_definition(net, x):
    """Every conv's LayerCAM map (stem.0's output before the in-place ReLU after it), normalised
    with eps 1e-7, resized to the input and averaged; or tanh(2 m) with eps 1e-8, resized to the
    largest map (16 x 16) and maxed."""
    a1 = net.stem[0](x).detach().requires_grad_()
    a2 = net.features[0](a1.relu())
    logits = net.head(net.features[1:](a2))
    g1, g2 = torch.autograd.grad(logits.gather(1, TARGETS[:, None]).sum(), [a1, a2])
    raws = [(g.clamp_min(0) * a).sum(1).relu().detach() for a, g in ((a1, g1), (a2, g2))]

    def scaled(m, eps):
        m = m - m.amin((1, 2), keepdim=True)
        return m / (m.amax((1, 2), keepdim=True) + eps)

    mean = torch.stack([upsample(scaled(m, 1e-7), (32, 32)) for m in raws]).mean(0)
    torch.testing.assert_close(cc.FullyCAM(net)(x, TARGETS), minmax(mean), atol=1e-5, rtol=1e-5)
    top = torch.maximum(*[upsample(torch.tanh(2 * scaled(m, 1e-8)), (16, 16)) for m in raws])
    torch.testing.assert_close(cc.FullyCAM(net, fuse="max", scale="tanh")(x, TARGETS), to_image(top, (32, 32)),
                               atol=1e-5, rtol=1e-5)
    # The same layers by name, and LayerCAM with grad-cam's fusion: the same map.
    by_name = cc.FullyCAM(net, ["stem.0", "features.0"])(x, TARGETS)
    torch.testing.assert_close(by_name, cc.LayerCAM(net, ["stem.0", "features.0"], preset="grad-cam")(x, TARGETS),
                               atol=1e-5, rtol=1e-5)


def test_fullycam_options(net, x):
    exact = cc.FullyCAM(net, eps=0.0, layer_norm="max", size="largest", align_corners=True)(x, TARGETS)
    assert exact.shape == (3, 32, 32) and not torch.allclose(exact, cc.FullyCAM(net)(x, TARGETS), atol=1e-3)
    relus = cc.FullyCAM(net, "relu")
    assert [layer_of(relus, m) for m in relus.target_layers] == ["stem.1", "features.2"]
    torch.testing.assert_close(relus(x, TARGETS), cc.LayerCAM(net, ["stem", "features"], preset="grad-cam")(x, TARGETS),
                               atol=1e-5, rtol=1e-5)
    assert "layers='relu'" in repr(relus)
    for call, error, match in [
        (lambda: cc.FullyCAM(net, "linear"), ValueError, "layers 'linear' is not a submodule"),
        (lambda: cc.FullyCAM(nn.Sequential(nn.Linear(2, 2)), "conv"), ValueError, "layers='conv'"),
        (lambda: cc.FullyCAM(net, fuse="sum"), ValueError, "fuse"),
        (lambda: cc.FullyCAM(net, layer_norm="l2"), ValueError, "layer_norm"),
        (lambda: cc.FullyCAM(net, scale="sigmoid"), ValueError, "scale"),
        (lambda: cc.FullyCAM(net, size="output"), ValueError, "size"),
        (lambda: cc.FullyCAM(net, eps=-1.0), ValueError, "eps"),
        (lambda: cc.FullyCAM(net, gamma=0), ValueError, "gamma"),
        (lambda: cc.FullyCAM(net, clone=1), TypeError, "clone"),
        (lambda: cc.FullyCAM(net, ["stem", "fc"])(x), TypeError, "layers: 'fc' must output a Tensor"),
    ]:
        with pytest.raises(error, match=match):
            call()


def layer_of(explainer, module):
    return next(n for n, m in explainer.model.named_modules() if m is module)


class AddOne(nn.Module):
    """Two convs, then 1 added to the second's output, in place with `+=` (a function, not a
    module) or not; GAP, fc."""

    def __init__(self, in_place: bool):
        super().__init__()
        self.in_place = in_place
        self.conv1, self.conv2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        a = self.conv2(self.conv1(x))
        if self.in_place:
            a += 1
        else:
            a = a + 1
        return self.fc(a.mean((2, 3)))


def test_fullycam_in_place_edits(x):
    model = AddOne(in_place=True).eval()
    with pytest.raises(ValueError, match="'conv2' was modified in place.*clone=True"):
        cc.FullyCAM(model)(x)
    _assert_clean(model, training=False)
    plain = AddOne(in_place=False).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(cc.FullyCAM(model, clone=True)(x, 2), cc.FullyCAM(plain)(x, 2))
    # An in-place module after a conv (VGG's ReLU(inplace=True)): the map sees the conv's output.
    vgg = [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(inplace), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
           for inplace in (True, False)]
    vgg[1].load_state_dict(vgg[0].state_dict())
    torch.testing.assert_close(cc.FullyCAM(vgg[0])(x, 2), cc.FullyCAM(vgg[1])(x, 2))


def test_fullycam_a_module_that_runs_twice_contributes_each_output(x):
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    out = cc.FullyCAM(model)(x, 1)
    unrolled = nn.Sequential(*(copy.deepcopy(m) for m in model)).eval()
    torch.testing.assert_close(out, cc.FullyCAM(unrolled)(x, 1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"score does not depend on layers \['side'\]"):
        cc.FullyCAM(Unused(nn.Sequential(*model)), ["net.0", "side"])(x)


def test_fullycam_holds_one_gradient_at_a_time():
    """Peak memory (the profiler's allocation events) of FullyCAM over 12 convs against the floor
    that any per-layer LayerCAM needs: the same forward keeping every conv's output, and one
    backward. The convs follow each other directly, so the forward saves nothing else and the
    gradients are the only term that could grow: FullyCAM may add its output and about one layer,
    while camfast's LayerCAM, which takes the 12 gradients from one autograd.grad call, adds
    about all of them (so the measurement does see gradients held at once)."""
    from benchmarks.harness import peak_memory_mb

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1)] + [nn.Conv2d(8, 8, 3, padding=1) for _ in range(11)]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval().requires_grad_(False)
    x = torch.rand(2, 3, 32, 32)
    layer_bytes, out_bytes = 2 * 8 * 32 * 32 * 4, 2 * 32 * 32 * 4

    def floor():
        kept = []

        def keep(module, inputs, output):
            if not output.requires_grad:
                output = output.detach().requires_grad_()
                kept.append(output)
                return output.clone()
            kept.append(output)

        handles = [m.register_forward_hook(keep) for m in layers]
        try:
            with torch.enable_grad():
                logits = model(x)
        finally:
            for handle in handles:
                handle.remove()
        torch.autograd.grad(logits[:, 1].sum(), kept[0])

    def extra(fn):
        return (peak_memory_mb(fn, torch.device("cpu")) - peak_memory_mb(floor, torch.device("cpu"))) * 2**20

    assert extra(lambda: cc.FullyCAM(model)(x, 1)) <= out_bytes + layer_bytes
    assert extra(lambda: cc.FullyCAM(model)(x, [[1, 2, 3]] * 2)) <= 3 * out_bytes + layer_bytes
    names = [str(i) for i in range(12)]
    assert extra(lambda: cc.LayerCAM(model, names, preset="grad-cam")(x, 1)) >= 10 * layer_bytes


# ---------------------------------------------------------------- overlay

def test_overlay():
    image = torch.rand(2, 3, 16, 16)
    cam = torch.rand(2, 4, 4)
    out = cc.overlay(image, cam, alpha=0.4)
    assert out.shape == image.shape and out.dtype == image.dtype and 0 <= out.min() and out.max() <= 1
    u8 = cc.overlay((image * 255).to(torch.uint8), cam)
    assert u8.dtype == torch.uint8 and u8.shape == image.shape
    torch.testing.assert_close(cc.overlay(image, cam, alpha=0.0), image)
    hot = cc.jet(torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(hot, torch.tensor([[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]]))
    with pytest.raises(ValueError, match="image"):
        cc.overlay(torch.rand(16, 16), cam)


# ---------------------------------------------------------------- the benchmark stays runnable

@pytest.mark.skipif(not (Path(__file__).parent.parent / "benchmarks").is_dir(), reason="outside the source tree")
def test_benchmark_cases_run():
    from benchmarks import bench_cam

    cases = bench_cam.cases(torch.device("cpu"), quick=True)
    assert {c.op for c in cases} >= {"score_cam[official]", "score_cam[torchcam]", "score_cam[grad-cam]", "grad_cam"}
    for case in cases:
        assert {"camfast"} <= set(case.providers)
        for provider in case.providers.values():
            provider()
