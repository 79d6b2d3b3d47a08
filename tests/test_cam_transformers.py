"""Explainers on vision transformers: `reshape_transform=` and the built-in token grid.

A small ViT (CLS token, [N, L, D] tokens) and a small Swin-like model (channels-last [N, h, w, C]
tokens), both defined in tests/camfast_testing/vision_transformers.py, against grad-cam 1.5.7 given the
equivalent reshape transform.
"""

from __future__ import annotations

import pytest
import torch

import camfast.cam as cc
from camfast.cam._base import Explainer
from camfast.cam.transformers import TokenGrid, channel_axis, positions

from test_cam_perturbation import agreement, assert_agrees, gradcam_lib, gradcam_maps
from camfast_testing.vision_transformers import TinySwin, TinyViT


TARGETS = [1, 5, 8]


def vit_tokens(a):
    """grad-cam's vit_reshape_transform for a 4 x 4 grid behind one CLS token."""
    return a[:, 1:].reshape(a.shape[0], 4, 4, a.shape[2]).transpose(2, 3).transpose(1, 2)


def swin_tokens(a):
    return a.permute(0, 3, 1, 2)


# (model, layer, the transform grad-cam is given). For Swin the layer is a last block's norm2, the
# layer whose maps localise in Swin-T (torchcam PR #412; its norm1 gives scattered maps).
CASES = {"vit": (TinyViT, "blocks.1.norm1", vit_tokens), "swin": (TinySwin, "stage2.1.norm2", swin_tokens)}
METHODS = {
    "GradCAM": {},
    "GradCAMPlusPlus": {"variant": "grad-cam"},
    "EigenCAM": {"sign": "lapack"},
    "EigenGradCAM": {"sign": "lapack"},
    "AblationCAM": {"ablation_value": "grad-cam-legacy"},
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    make, layer, transform = CASES[request.param]
    return make(), layer, transform


@pytest.fixture
def x():
    return torch.rand(3, 3, 32, 32)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_token_grid_and_callable_match_gradcam(case, x, method):
    model, layer, transform = case
    peer_options = {}
    if method == "AblationCAM":  # grad-cam ablates token channels with its ViT ablation layer
        peer_options["ablation_layer"] = gradcam_lib().ablation_layer.AblationLayerVit()
    theirs = gradcam_maps(method, model, layer, x, TARGETS, reshape_transform=transform, **peer_options)
    for reshape in ("tokens", transform):
        ours = getattr(cc, method)(model, layer, reshape_transform=reshape, **METHODS[method])(x, TARGETS)
        assert_agrees(ours, theirs)


def test_ablation_on_tokens_runs_only_the_rest_of_the_model(case, x):
    model, layer, transform = case
    split = cc.AblationCAM(model, layer, reshape_transform="tokens", ablation_value="grad-cam-legacy")
    whole = cc.AblationCAM(model, layer, reshape_transform="tokens", ablation_value="grad-cam-legacy", split=False)
    torch.testing.assert_close(split(x, TARGETS), whole(x, TARGETS), atol=1e-5, rtol=1e-5)
    assert (split.mode, whole.mode) == ("fx", "model")


def test_scorecam_and_smoothgradcampp_on_a_vit(x):
    from torchcam.methods import SmoothGradCAMpp

    torch.manual_seed(0)
    model = TinyViT()
    theirs = gradcam_maps("ScoreCAM", model, "blocks.1.norm1", x, TARGETS, reshape_transform=vit_tokens)
    assert_agrees(cc.ScoreCAM(model, "blocks.1.norm1", preset="grad-cam", reshape_transform="tokens")(x, TARGETS),
                  theirs)
    with SmoothGradCAMpp(model, "blocks.1.norm1", num_samples=2, reshape_transform=vit_tokens,
                         input_shape=(3, 32, 32)) as extractor:
        model(x)
        torch.manual_seed(3)
        theirs = extractor(class_idx=TARGETS)[0]
    torch.manual_seed(3)
    assert_agrees(cc.SmoothGradCAMpp(model, "blocks.1.norm1", num_samples=2, reshape_transform="tokens")(x, TARGETS),
                  theirs)


# Every explainer in camfast.cam with a target layer (FullGrad and FullyCAM explain every layer of a
# kind, feature maps [N, K, h, w], so they take no transform), and what each needs besides the
# model, the layer and the transform. LayerNorm outputs are negative: AblationCAM takes grad-cam's
# value there.
EVERY = sorted(name for name in cc.__all__ if isinstance(getattr(cc, name), type)
               and issubclass(getattr(cc, name), Explainer) and name not in ("FullGrad", "FullyCAM"))
OPTIONS = {
    "CAM": lambda: {"fc": "head"},
    "AblationCAM": lambda: {"ablation_value": "grad-cam-legacy"},
    "ISCAM": lambda: {"num_samples": 2},
    "SSCAM": lambda: {"num_samples": 2, "generator": torch.Generator().manual_seed(0)},
    "SmoothGradCAMpp": lambda: {"num_samples": 2, "generator": torch.Generator().manual_seed(0)},
}
# RefineCAM's second, earlier layer: tokens of another grid in Swin.
EARLIER = {"TinyViT": "blocks.0.norm1", "TinySwin": "stage1.1.norm2"}


@pytest.mark.parametrize("method", EVERY)
def test_every_explainer_takes_tokens(case, x, method):
    model, layer, transform = case
    layers = [EARLIER[type(model).__name__], layer] if method == "RefineCAM" else layer

    def explainer(reshape):
        return getattr(cc, method)(model, layers, reshape_transform=reshape, **OPTIONS.get(method, dict)())

    grid = torch.tensor([[1, 2], [5, 6], [8, 9]])
    ours = explainer("tokens")(x, grid)
    assert ours.shape == (3, 2, 32, 32) and ours.amax() == 1  # some map is not constant
    torch.testing.assert_close(ours, explainer(transform)(x, grid), atol=1e-5, rtol=1e-5)


def test_several_classes_on_tokens(x):
    torch.manual_seed(0)
    model = TinyViT()
    grid = torch.tensor([[1, 2], [3, 4], [5, 6]])
    for explainer in (cc.GradCAM(model, "blocks.1.norm1", reshape_transform="tokens"),
                      cc.AblationCAM(model, "blocks.1.norm1", reshape_transform="tokens",
                                     ablation_value="grad-cam-legacy")):
        both = explainer(x, grid)
        for t in range(2):
            torch.testing.assert_close(both[:, t], explainer(x, grid[:, t]), atol=1e-5, rtol=1e-5)


def test_token_grid_layouts():
    grid = TokenGrid()
    assert grid.layout(197, (224, 224)) == (1, (14, 14))  # ViT-B/16, CLS
    assert grid.layout(577, (384, 384)) == (1, (24, 24))
    assert grid.layout(49, (224, 224)) == (0, (7, 7))  # Swin stage 4 as [N, L, C]
    assert grid.layout(281, (224, 320)) == (1, (14, 20))  # not square
    assert grid.layout(5, (33, 33)) == (1, (2, 2))  # no stride divides 33: floor(33 / 16)
    tokens = torch.rand(2, 17, 8)
    maps = grid(tokens, (32, 32))
    torch.testing.assert_close(maps, vit_tokens(tokens))
    channels_last = torch.rand(2, 4, 5, 8)
    torch.testing.assert_close(grid(channels_last, (32, 40)), channels_last.permute(0, 3, 1, 2))
    # DINOv2-style registers: 4 + CLS + 16 x 16 also fits 65 prefix tokens + 14 x 14
    with pytest.raises(ValueError, match="ambiguous"):
        grid.layout(261, (224, 224))
    assert TokenGrid(prefix_tokens=5).layout(261, (224, 224)) == (5, (16, 16))
    assert TokenGrid(grid=(16, 16)).layout(261, (224, 224)) == (5, (16, 16))
    with pytest.raises(ValueError, match="no grid fits"):
        grid.layout(3, (32, 32))
    with pytest.raises(ValueError, match="does not fit"):
        TokenGrid(grid=(16, 16), prefix_tokens=1).layout(261, (224, 224))
    with pytest.raises(ValueError, match="prefix_tokens"):
        TokenGrid(prefix_tokens=-1)
    with pytest.raises(ValueError, match="grid"):
        TokenGrid(grid=(4,))
    with pytest.raises(TypeError, match="tokens"):
        grid(torch.rand(2, 3), (32, 32))


def test_positions_and_channel_axis():
    index = positions(vit_tokens, (2, 17, 8), (32, 32))
    probe = torch.arange(17 * 8, dtype=torch.float64).view(1, 17, 8)
    torch.testing.assert_close(index.double(), vit_tokens(probe)[0])
    axis, channels = channel_axis(TokenGrid(), (2, 17, 8), (32, 32))
    assert axis == 2 and channels.tolist() == list(range(8))
    with pytest.raises(ValueError, match="only rearrange"):
        positions(lambda a: vit_tokens(a) * 0.5, (2, 17, 8), (32, 32))


def test_bad_reshape_transform(x):
    torch.manual_seed(0)
    model = TinyViT()
    with pytest.raises(ValueError, match="reshape_transform"):
        cc.GradCAM(model, "blocks.1.norm1", reshape_transform="grid")
    with pytest.raises(TypeError, match="reshape_transform"):
        cc.GradCAM(model, "blocks.1.norm1", reshape_transform=3)
    with pytest.raises(ValueError, match="reshape_transform must return"):
        cc.GradCAM(model, "blocks.1.norm1", reshape_transform=lambda a: a)(x)
    with pytest.raises(TypeError, match="must output a Tensor"):
        cc.GradCAM(model, "blocks.1.norm1")(x)  # tokens without a transform
    assert not any(m._forward_hooks for m in model.modules())
    corr, _ = agreement(cc.GradCAM(model, "blocks.1.norm1", reshape_transform="tokens")(x, TARGETS),
                        cc.GradCAM(model, "blocks.1.norm1", reshape_transform=vit_tokens)(x, TARGETS))
    assert corr > 0.99999
