"""camfast.cam against the real peer libraries: `python -m benchmarks.cam_peer_check [--quick] [--out DIR]`.

Each camfast explainer (with the preset or variant that reproduces the peer) and the peer's own
method run on the same model, images and classes; the peer's map is resized to the input
(bilinear, align_corners=False) and min-maxed; the smallest per-image Pearson correlation must
reach 0.99999 and the largest absolute difference stay within 1e-5. Peers that are not installed
are skipped with a note (`make bench` installs them). Exit status 1 when a pair falls short. It also draws the methods side by side on one image
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

THRESHOLD = 0.99999  # the smallest per-image Pearson correlation a pair must reach
MAX_DIFF = 1e-5      # and the largest absolute difference, both after `peers.as_input_maps`


def pairs(model, layers: list[str], cam_layer: str | None = None, fc_name: str | None = None):
    """(method, peer, camfast explainer, peer function(x, targets [N])) for every pair with equal semantics.

    `layers`: the target layers, by name. The gradient methods take them all (each peer fuses
    them by its own rule, which camfast's preset or `fuse` reproduces); the methods that take one
    layer (Score-CAM and its variants, captum's Grad-CAM) are paired only when there is one. CAM
    needs the layer whose pooled output feeds the classifier `fc_name`: `cam_layer`.
    """
    modules = [dict(model.named_modules())[name] for name in layers]
    one = layers[0] if len(layers) == 1 else None
    g, t = peers.gradcam_explain, peers.torchcam_explain

    def gc(method, **options):
        return lambda x, y: g(method, model, modules, x, y, **options)

    def tc(method, **options):
        return lambda x, y: t(method, model, layers, x, y, **options)

    rows = []
    if one is not None:
        rows += [
            ("ScoreCAM[torchcam]", "torchcam", cc.ScoreCAM(model, one, preset="torchcam"),
             lambda x, y: t("ScoreCAM", model, one, x, y, batch_size=16)),
            ("ScoreCAM[grad-cam]", "grad-cam", cc.ScoreCAM(model, one, preset="grad-cam"),
             gc("ScoreCAM", batch_size=16)),
            ("ISCAM", "torchcam", cc.ISCAM(model, one, num_samples=3), tc("ISCAM", num_samples=3)),
            # Noise-free SS-CAM: the sampled noise cannot be shared, so compare its deterministic part.
            ("SSCAM (std 1e-6)", "torchcam", cc.SSCAM(model, one, num_samples=2, std=1e-6),
             tc("SSCAM", num_samples=2, std=1e-6)),
            ("GradCAM", "captum", cc.GradCAM(model, one), lambda x, y: peers.captum_gradcam(model, modules[0], x, y)),
            # grad-cam's ShapleyCAM takes one layer: its Hessian-vector product frees the graph,
            # so a second layer raises.
            ("ShapleyCAM", "grad-cam", cc.ShapleyCAM(model, one), gc("ShapleyCAM")),
            ("ShapleyCAM (ReST)", "grad-cam", cc.ShapleyCAM(model, one, objective="rest"),
             gc("ShapleyCAM", objective="rest")),
        ]
        if cam_layer is not None:
            rows.append(("CAM", "torchcam", cc.CAM(model, cam_layer, fc=fc_name),
                         lambda x, y: t("CAM", model, cam_layer, x, y, fc_layer=fc_name)))
    rows += [
        ("GradCAM", "grad-cam", cc.GradCAM(model, layers), gc("GradCAM")),
        ("GradCAM (fuse max)", "torchcam", cc.GradCAM(model, layers, fuse="max"), tc("GradCAM")),
        ("GradCAMPlusPlus[grad-cam]", "grad-cam", cc.GradCAMPlusPlus(model, layers, variant="grad-cam"),
         gc("GradCAMPlusPlus")),
        ("HiResCAM", "grad-cam", cc.HiResCAM(model, layers), gc("HiResCAM")),
        ("GradCAMElementWise", "grad-cam", cc.GradCAMElementWise(model, layers), gc("GradCAMElementWise")),
        ("XGradCAM[grad-cam]", "grad-cam", cc.XGradCAM(model, layers, preset="grad-cam"), gc("XGradCAM")),
        ("XGradCAM[torchcam]", "torchcam", cc.XGradCAM(model, layers, preset="torchcam"), tc("XGradCAM")),
        ("LayerCAM[grad-cam]", "grad-cam", cc.LayerCAM(model, layers, preset="grad-cam"), gc("LayerCAM")),
        ("LayerCAM[torchcam]", "torchcam", cc.LayerCAM(model, layers, preset="torchcam"), tc("LayerCAM")),
        ("FEM", "grad-cam", cc.FEM(model, layers), gc("FEM")),
        ("FinerCAM[grad-cam]", "grad-cam", cc.FinerCAM(model, layers, preset="grad-cam"),
         lambda x, y: peers.gradcam_finer(model, modules, x, y)),
        ("FinerCAM[torchcam]", "torchcam", cc.FinerCAM(model, layers, preset="torchcam"), tc("FinerCAM")),
    ]
    if one is None:
        rows += fully_pairs(model, layers)
    return rows


def fully_pairs(model, layers: list[str]):
    """FullyCAM on `layers` and on every conv (layers="conv") against the peers' LayerCAM with the
    same target layers: grad-cam's mean fusion, and torchcam's tanh + max (`fuse_cams`)."""
    named = dict(model.named_modules())
    convs = [name for name, m in named.items() if isinstance(m, torch.nn.Conv2d)]
    rows = []
    for label, ours, names in [("", layers, layers), (" every conv", "conv", convs)]:
        modules = [named[name] for name in names]
        rows += [
            (f"FullyCAM{label} (mean)", "grad-cam", cc.FullyCAM(model, ours),
             lambda x, y, modules=modules: peers.gradcam_explain("LayerCAM", model, modules, x, y)),
            (f"FullyCAM{label} (max, tanh)", "torchcam", cc.FullyCAM(model, ours, fuse="max", scale="tanh"),
             lambda x, y, names=names: peers.torchcam_explain("LayerCAM", model, names, x, y)),
        ]
    return rows


def compare(model, layers: list[str], x: torch.Tensor, targets: torch.Tensor, cam_layer: str | None = None,
            fc_name: str | None = None, rows=None) -> list[dict]:
    """Each pair's agreement: the smallest per-image correlation and the largest |difference|.

    `targets`: [N] classes, or [N, T]: camfast then explains the T classes per image in one call,
    and each column is compared with a peer call for that class alone. `rows`: the pairs
    (default `pairs(model, layers, cam_layer, fc_name)`).
    """
    grid = targets if targets.dim() == 2 else targets[:, None]
    result = []
    for method, peer, explainer, peer_fn in rows if rows is not None else pairs(model, layers, cam_layer, fc_name):
        if not peers.available(peer):
            continue
        ours = explainer(x, grid if targets.dim() == 2 else targets)
        ours = ours if targets.dim() == 2 else ours[:, None]
        corr, worst = 1.0, 0.0
        for c in range(grid.shape[1]):
            theirs = peers.as_input_maps(peer_fn(x, grid[:, c]).to(ours.device), ours.shape[-2:])
            corr = min(corr, peers.correlation(ours[:, c], theirs))
            worst = max(worst, (ours[:, c] - theirs).abs().max().item())
        result.append(dict(method=method, peer=peer, corr=corr, max_abs=worst))
    return result


def agrees(row: dict) -> bool:
    return row["corr"] >= THRESHOLD and row["max_abs"] <= MAX_DIFF


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
        flag = "" if agrees(r) else f"   < {THRESHOLD} or > {MAX_DIFF}"
        print(f"{r['method']:28} {r['peer']:9} {r['corr']:10.7f} {r['max_abs']:11.2e}{flag}")


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
    rows = compare(model, ["layer4"], x, torch.tensor([3, 500]), "expand", "fc")
    rows += compare(model, ["layer3", "layer4"], x, torch.tensor([[3, 7], [500, 2]]))
    _print_rows(rows)

    grid_model, image = bench_net_and_image(args.quick)
    method_grid(grid_model, image, grid_model(image).argmax(1), "layer4", out / "cam_methods_cpu.png")
    return 0 if rows and all(map(agrees, rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
