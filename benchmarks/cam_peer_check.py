"""camfast.cam against the real peer libraries: `python -m benchmarks.cam_peer_check`.

Each camfast explainer (with the preset or variant that reproduces the peer) and the peer's own
method run on the same model, images and classes; the peer's map is resized to the input
(bilinear, align_corners=False) and min-maxed, and the smallest per-image Pearson correlation
must reach 0.999. Peers that are not installed are skipped with a note (`make bench` installs
them). Exit status 1 when a pair falls short.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import camfast.cam as cc

from . import peers

THRESHOLD = 0.999


def _as_input_maps(maps: torch.Tensor, size) -> torch.Tensor:
    maps = maps.float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = maps.amin((1, 2), keepdim=True), maps.amax((1, 2), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest per-image Pearson correlation; two constant maps count as 1 when they are equal."""
    def one(u, v):
        u, v = u.flatten().double(), v.flatten().double()
        if u.std() == 0 or v.std() == 0:
            return float(torch.allclose(u, v, atol=1e-5))
        return torch.corrcoef(torch.stack([u, v]))[0, 1].item()

    return min(one(u, v) for u, v in zip(a, b))


def pairs(model, layer_name: str, cam_layer: str, fc_name: str):
    """(method, peer, camfast explainer, peer function(x, targets)) for every pair with equal semantics.

    CAM needs the layer whose pooled output feeds `fc_name`: `cam_layer`."""
    layer = dict(model.named_modules())[layer_name]
    t = peers.torchcam_explain
    return [
        ("ScoreCAM[torchcam]", "torchcam", cc.ScoreCAM(model, layer_name, preset="torchcam"),
         lambda x, y: t("ScoreCAM", model, layer_name, x, y, batch_size=16)),
        ("ScoreCAM[grad-cam]", "grad-cam", cc.ScoreCAM(model, layer_name, preset="grad-cam"),
         lambda x, y: peers.gradcam_explain("ScoreCAM", model, layer, x, y, batch_size=16)),
        ("ISCAM", "torchcam", cc.ISCAM(model, layer_name, num_samples=3),
         lambda x, y: t("ISCAM", model, layer_name, x, y, num_samples=3)),
        # Noise-free SS-CAM: the sampled noise cannot be shared, so compare its deterministic part.
        ("SSCAM (std 1e-6)", "torchcam", cc.SSCAM(model, layer_name, num_samples=2, std=1e-6),
         lambda x, y: t("SSCAM", model, layer_name, x, y, num_samples=2, std=1e-6)),
        ("GradCAM", "grad-cam", cc.GradCAM(model, layer_name),
         lambda x, y: peers.gradcam_explain("GradCAM", model, layer, x, y)),
        ("GradCAM", "torchcam", cc.GradCAM(model, layer_name), lambda x, y: t("GradCAM", model, layer_name, x, y)),
        ("GradCAM", "captum", cc.GradCAM(model, layer_name), lambda x, y: peers.captum_gradcam(model, layer, x, y)),
        ("GradCAMPlusPlus[grad-cam]", "grad-cam", cc.GradCAMPlusPlus(model, layer_name, variant="grad-cam"),
         lambda x, y: peers.gradcam_explain("GradCAMPlusPlus", model, layer, x, y)),
        ("CAM", "torchcam", cc.CAM(model, cam_layer, fc=fc_name),
         lambda x, y: t("CAM", model, cam_layer, x, y, fc_layer=fc_name)),
    ]


def compare(model, layer_name: str, cam_layer: str, fc_name: str, x: torch.Tensor,
            targets: torch.Tensor) -> list[dict]:
    rows = []
    for method, peer, explainer, peer_fn in pairs(model, layer_name, cam_layer, fc_name):
        if not peers.available(peer):
            continue
        ours = explainer(x, targets)
        theirs = _as_input_maps(peer_fn(x, targets).to(ours.device), ours.shape[-2:])
        rows.append(dict(method=method, peer=peer, corr=correlation(ours, theirs),
                         max_abs=(ours - theirs).abs().max().item()))
    return rows


def main() -> int:
    from .bench_cam import BenchNet

    torch.manual_seed(0)
    model = BenchNet(widths=(8, 16, 32, 64), expand=128)
    x = torch.rand(2, 3, 96, 96)
    targets = torch.tensor([3, 500])
    rows = compare(model, "layer4", "expand", "fc", x, targets)
    print(f"{'method':28} {'peer':9} {'min corr':>10} {'max |diff|':>11}")
    for r in rows:
        flag = "" if r["corr"] >= THRESHOLD else "   < 0.999"
        print(f"{r['method']:28} {r['peer']:9} {r['corr']:10.6f} {r['max_abs']:11.2e}{flag}")
    return 0 if rows and all(r["corr"] >= THRESHOLD for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
