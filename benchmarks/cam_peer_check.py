"""camfast.cam against the real peer libraries: `python -m benchmarks.cam_peer_check [--quick] [--out DIR]`.

Each camfast explainer (with the preset or variant that reproduces the peer) and the peer's own
method run on the same model, images and classes; the peer's map is resized to the input
(bilinear, align_corners=False) and min-maxed, and the smallest per-image Pearson correlation
must reach 0.999. Peers that are not installed are skipped with a note (`make bench` installs
them). Exit status 1 when a pair falls short. It also draws the methods side by side on one image
(camfast's overlay, the peer's and their difference) into DIR/cam_methods_<device>.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import camfast.cam as cc

from . import peers, results
from .cam_models import BenchNet, bench_net_and_image

THRESHOLD = 0.999


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
        theirs = peers.as_input_maps(peer_fn(x, targets).to(ours.device), ours.shape[-2:])
        rows.append(dict(method=method, peer=peer, corr=peers.correlation(ours, theirs),
                         max_abs=(ours - theirs).abs().max().item()))
    return rows


def method_grid(model, x, targets, layer: str, path: Path) -> None:
    """One image, one row per method: camfast's overlay, the peer's, and |difference|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    module = dict(model.named_modules())[layer]
    rows = [
        ("CAM (expand)", cc.CAM(model, "expand"),
         ("torchcam", lambda: peers.torchcam_explain("CAM", model, "expand", x, targets, fc_layer="fc"))),
        ("Grad-CAM", cc.GradCAM(model, layer),
         ("grad-cam", lambda: peers.gradcam_explain("GradCAM", model, module, x, targets))),
        ("Grad-CAM++ (grad-cam)", cc.GradCAMPlusPlus(model, layer, variant="grad-cam"),
         ("grad-cam", lambda: peers.gradcam_explain("GradCAMPlusPlus", model, module, x, targets))),
        ("Grad-CAM++ (official)", cc.GradCAMPlusPlus(model, layer), None),
        ("Score-CAM (official)", cc.ScoreCAM(model, layer), None),
        ("Score-CAM (torchcam)", cc.ScoreCAM(model, layer, preset="torchcam"),
         ("torchcam", lambda: peers.torchcam_explain("ScoreCAM", model, layer, x, targets))),
        ("Score-CAM (grad-cam)", cc.ScoreCAM(model, layer, preset="grad-cam"),
         ("grad-cam", lambda: peers.gradcam_explain("ScoreCAM", model, module, x, targets))),
        ("IS-CAM (3 steps)", cc.ISCAM(model, layer, num_samples=3), None),
    ]
    image = x[:1].cpu()
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.4 * len(rows)))
    for ax_row, (name, explainer, peer) in zip(axes, rows):
        ours = explainer(x[:1], targets[:1]).cpu()
        ax_row[0].imshow(cc.overlay(image[0], ours[0]).permute(1, 2, 0).numpy())
        ax_row[0].set_title(f"camfast {name}", fontsize=8)
        if peer is not None and peers.available(peer[0]):
            theirs = peers.as_input_maps(peer[1]().cpu()[:1], ours.shape[-2:])
            ax_row[1].imshow(cc.overlay(image[0], theirs[0]).permute(1, 2, 0).numpy())
            ax_row[1].set_title(peer[0], fontsize=8)
            ax_row[2].imshow((ours[0] - theirs[0]).abs().numpy(), cmap="gray", vmin=0, vmax=0.05)
            ax_row[2].set_title("|difference| (black 0, white 0.05)", fontsize=8)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"methods side by side: {path}")


def _print_rows(rows: list[dict]) -> None:
    print(f"{'method':28} {'peer':9} {'min corr':>10} {'max |diff|':>11}")
    for r in rows:
        flag = "" if r["corr"] >= THRESHOLD else "   < 0.999"
        print(f"{r['method']:28} {r['peer']:9} {r['corr']:10.6f} {r['max_abs']:11.2e}{flag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cam_peer_check", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model and image for the methods grid")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the grid goes (default: bench-results/, or bench-results/quick/)")
    args = parser.parse_args(argv)
    out = args.out or results.out_dir(args.quick)

    torch.manual_seed(0)
    model = BenchNet(widths=(8, 16, 32, 64), expand=128)
    x = torch.rand(2, 3, 96, 96)
    rows = compare(model, "layer4", "expand", "fc", x, torch.tensor([3, 500]))
    _print_rows(rows)

    grid_model, image = bench_net_and_image(args.quick)
    method_grid(grid_model, image, grid_model(image).argmax(1), "layer4", out / "cam_methods_cpu.png")
    return 0 if rows and all(r["corr"] >= THRESHOLD for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
