"""Evaluate an explainer on a WSOL dataset: `python -m camfast.evaluate --help`.

    python -m camfast.evaluate --metadata metadata/CUB/test --images CUB_200_2011/images \\
        --model mypackage.models:resnet50_cam --checkpoint best.pt --method gradcam --layer layer4 \\
        --metrics maxboxacc,average_drop,deletion,insertion --out results/

reads the protocol's metadata (camfast.wsol.dataset), computes the CAMs of the ground-truth
class in batches from a DataLoader, and writes to --out a JSON report (`report.json`), one CSV row
per image (`per_image.csv`) and a PNG of example overlays with the ground-truth boxes (green) and
the boxes at the best threshold (red) (`overlays.png`). The three files are written to a
temporary folder beside --out and moved in only when everything has succeeded.

Under `torchrun --nproc_per_node=N python -m camfast.evaluate ...` every process takes whole
batches (batch b goes to process b mod N, so each image is scored in the same batch as in one
process), the metrics are synced (torchmetrics), and rank 0 writes the same files as a
one-process run, with the same numbers. ROAD's noise is drawn per process: use --road-noise 0 for
numbers that do not depend on the number of processes.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

METRICS = ("maxboxacc", "pxap", "average_drop", "deletion", "insertion", "road")
EXAMPLES = 8


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m camfast.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", required=True, type=Path, help="the split's metadata folder")
    parser.add_argument("--images", required=True, type=Path, help="the folder the image ids are relative to")
    parser.add_argument("--masks", type=Path, help="the folder the mask paths are relative to (OpenImages)")
    parser.add_argument("--model", required=True, help="MODULE:FUNCTION returning the nn.Module (no arguments)")
    parser.add_argument("--checkpoint", type=Path, help="a state dict (or a dict with 'state_dict') to load")
    parser.add_argument("--method", required=True, help="an explainer of camfast.cam, e.g. gradcam, cam, scorecam")
    parser.add_argument("--layer", required=True, help="the target layer's dotted name")
    parser.add_argument("--metrics", default="maxboxacc", help=f"comma-separated, from {','.join(METRICS)}")
    parser.add_argument("--out", required=True, type=Path, help="the folder for the report, CSV and PNG")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=224, help="images are resized to size x size")
    parser.add_argument("--cam-curve-interval", type=float, default=0.001, help="score-threshold step")
    parser.add_argument("--deletion-preset", default="rise", choices=("rise", "torchcam"))
    parser.add_argument("--road-noise", type=float, default=0.01)
    parser.add_argument("--metric-batch-size", type=int, default=32, help="perturbed inputs per forward")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in args.metrics if m not in METRICS]
    if unknown or not args.metrics:
        parser.error(f"--metrics: unknown {unknown}, choose from {','.join(METRICS)}")
    for name in ("batch_size", "size", "metric_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.workers < 0 or not 0 < args.cam_curve_interval <= 1 or args.road_noise < 0:
        parser.error("--workers must be >= 0, --cam-curve-interval in (0, 1], --road-noise >= 0")
    return args


def load_model(spec: str, checkpoint: Path | None, device: torch.device) -> torch.nn.Module:
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise SystemExit(f"--model must be MODULE:FUNCTION, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: report whatever its import raised
        raise SystemExit(f"--model: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    make = getattr(module, function, None)
    if not callable(make):
        raise SystemExit(f"--model: {module_name!r} has no callable {function!r}")
    model = make()
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f"--model: {spec}() must return an nn.Module, got {type(model).__name__}")
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as exc:
            raise SystemExit(f"--checkpoint {checkpoint}: {type(exc).__name__}: {exc}") from None
    return model.to(device).eval()


def make_explainer(name: str, model, layer: str):
    from . import cam

    methods = {n.lower(): getattr(cam, n) for n in cam.__all__
               if isinstance(getattr(cam, n), type) and issubclass(getattr(cam, n), cam._base.Explainer)}
    methods.update({"gradcam++": methods.get("gradcamplusplus")})
    key = name.lower().replace("-", "").replace("_", "")
    if methods.get(key) is None:
        raise SystemExit(f"--method: unknown {name!r}, choose from {sorted(k for k in methods if methods[k])}")
    try:
        return methods[key](model, layer)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--method {name} --layer {layer}: {exc}") from None


class Shard(torch.utils.data.Sampler):
    """Whole batches for this process: batch b (images b*B .. b*B + B - 1) goes to rank b mod N."""

    def __init__(self, length: int, batch_size: int, rank: int, world: int):
        self.batches = [list(range(s, min(s + batch_size, length))) for s in range(0, length, batch_size)][rank::world]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Progress:
    """A one-line progress bar on stderr (rank 0 only)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.start, self.done = total, enabled, time.perf_counter(), 0

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            filled = int(30 * self.done / max(self.total, 1))
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} batches, {rate:.2f}/s",
                  end="\n" if self.done == self.total else "", file=sys.stderr, flush=True)


def build_metrics(args, model, kind: str):
    from .metrics import ROAD, AverageDropIncrease, DeletionInsertion
    from .wsol import BoxEvaluator, MaskEvaluator

    if "maxboxacc" in args.metrics and kind != "boxes":
        raise SystemExit(f"--metrics maxboxacc needs boxes in {args.metadata / 'localization.txt'}, it holds masks")
    if "pxap" in args.metrics and kind != "masks":
        raise SystemExit(f"--metrics pxap needs masks in {args.metadata / 'localization.txt'}, it holds boxes")
    chosen = {}
    if "maxboxacc" in args.metrics:
        chosen["maxboxacc"] = BoxEvaluator(cam_curve_interval=args.cam_curve_interval)
    if "pxap" in args.metrics:
        chosen["pxap"] = MaskEvaluator(cam_curve_interval=args.cam_curve_interval)
    if "average_drop" in args.metrics:
        chosen["average_drop"] = AverageDropIncrease(model, batch_size=args.metric_batch_size)
    if {"deletion", "insertion"} & set(args.metrics):
        chosen["deletion_insertion"] = DeletionInsertion(model, preset=args.deletion_preset,
                                                         batch_size=args.metric_batch_size)
    if "road" in args.metrics:
        chosen["road"] = ROAD(model, noise=args.road_noise, batch_size=args.metric_batch_size)
    return chosen


def evaluate_batch(metrics: dict, model, explainer, x, labels, where) -> list[dict]:
    """Update every metric with one batch; the batch's per-image CSV fields."""
    from .wsol import normalize_cam

    with torch.no_grad():
        predicted = model(x).argmax(1)
    cams = explainer(x, labels)
    scoremaps = normalize_cam(cams).cpu().numpy()
    correct = (predicted == labels).cpu().numpy()
    rows = [{"label": int(l), "predicted": int(p), "correct": bool(c)}
            for l, p, c in zip(labels.tolist(), predicted.tolist(), correct)]
    if "maxboxacc" in metrics:
        metrics["maxboxacc"].update(scoremaps, where, correct)
        for row, iou in zip(rows, metrics["maxboxacc"].last_best_iou.max(1)):
            row["max_iou"] = float(iou)
    if "pxap" in metrics:
        metrics["pxap"].update(scoremaps, np.stack(where))
    for name, fields in (("average_drop", ("average_drop", "increase_in_confidence")),
                         ("deletion_insertion", ("deletion_auc", "insertion_auc")), ("road", ("road",))):
        if name in metrics:
            metrics[name].update(x, cams, labels)
            for field in fields:
                for row, value in zip(rows, getattr(metrics[name], field)[-1].tolist()):
                    row[field] = value
    return rows, scoremaps


def report(metrics: dict, args) -> dict:
    out = {}
    if "maxboxacc" in metrics:
        box = metrics["maxboxacc"].compute()
        out.update(maxboxacc_v2=box.value, maxboxacc_per_iou={str(k): v for k, v in box.max_box_acc.items()},
                   gt_known_loc=box.gt_known_loc, top1_loc=box.top1_loc, best_threshold=box.best_threshold)
    if "pxap" in metrics:
        out["pxap"] = metrics["pxap"].compute().pxap
    if "average_drop" in metrics:
        out.update(metrics["average_drop"].compute())
    if "deletion_insertion" in metrics:
        areas = metrics["deletion_insertion"].compute()
        out.update({k: v for k, v in areas.items() if k.split("_")[0] in args.metrics})
    if "road" in metrics:
        out.update(metrics["road"].compute())
    return out


def overlays(examples, best_threshold, size: int, boxes: bool) -> np.ndarray:
    """A row of image + CAM overlays with the ground-truth (green) and predicted (red) boxes."""
    import cv2

    from .cam import overlay
    from .wsol import cam_to_boxes
    from .wsol.dataset import MEAN, STD

    tiles = []
    for _, image, scoremap, where in examples:
        rgb = (image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]).clamp(0, 1)
        blended = overlay(rgb, torch.from_numpy(scoremap).float()).permute(1, 2, 0)
        tile = np.ascontiguousarray((blended.numpy() * 255).astype(np.uint8)[..., ::-1])  # RGB -> BGR
        if boxes:
            for x0, y0, x1, y1 in where.tolist():
                cv2.rectangle(tile, (x0, y0), (x1, y1), (0, 200, 0), 2)
            if best_threshold is not None:
                for x0, y0, x1, y1 in cam_to_boxes(scoremap, best_threshold).tolist():
                    cv2.rectangle(tile, (x0, y0), (x1, y1), (0, 0, 230), 2)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1) if tiles else np.zeros((size, size, 3), np.uint8)


def write_outputs(out: Path, summary: dict, rows: list[dict], picture: np.ndarray) -> None:
    """Write the three files to a temporary folder beside `out`, then move them in."""
    import cv2

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (staging / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with (staging / "per_image.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if not cv2.imwrite(str(staging / "overlays.png"), picture):
            raise OSError(f"{out / 'overlays.png'}: could not be written")
        out.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "per_image.csv", "overlays.png"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from .wsol.dataset import MetadataError, WSOLDataset, check_files, read_metadata

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    device = torch.device(args.device)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    try:
        meta = read_metadata(args.metadata)
        check_files(meta, args.images, args.masks)
    except MetadataError as exc:
        raise SystemExit(str(exc)) from None
    model = load_model(args.model, args.checkpoint, device)
    explainer = make_explainer(args.method, model, args.layer)
    metrics = build_metrics(args, model, meta.kind)
    dataset = WSOLDataset(meta, args.images, args.masks, args.size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=Shard(len(dataset), args.batch_size, rank, world),
                                         num_workers=args.workers, collate_fn=WSOLDataset.collate)
    progress = Progress(len(loader), rank == 0 and not args.no_progress)
    rows, examples = [], []
    try:
        for index, images, labels, where in loader:
            batch_rows, scoremaps = evaluate_batch(metrics, model, explainer, images.to(device), labels.to(device),
                                                   where)
            for i, row in zip(index.tolist(), batch_rows):
                rows.append({"index": i, "image_id": meta.image_ids[i], **row})
            examples += list(zip(index.tolist(), images, scoremaps, where))[:EXAMPLES - len(examples)]
            progress.step()
    except MetadataError as exc:  # a file that exists but does not decode
        raise SystemExit(str(exc)) from None
    summary = report(metrics, args)  # syncs across processes
    if distributed:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (rows, examples))
        rows = [r for part, _ in gathered for r in part]
        examples = [e for _, part in gathered for e in part]
    if rank == 0:
        rows.sort(key=lambda r: r["index"])
        examples = sorted(examples, key=lambda e: e[0])[:EXAMPLES]
        summary = {"images": len(rows), "method": args.method, "layer": args.layer, "model": args.model,
                   "metrics": summary}
        summary["metrics"] = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                              for k, v in summary["metrics"].items()}
        write_outputs(args.out, summary, rows, overlays(examples, summary["metrics"].get("best_threshold"), args.size,
                                                      meta.kind == "boxes"))
        print(json.dumps(summary["metrics"], indent=2))
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
