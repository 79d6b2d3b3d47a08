"""Every stateful evaluator over a fixed synthetic set, sharded by batch over the processes.

`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_metrics_worker.py OUT`
writes rank 0's computed results to OUT (JSON); `evaluate(rank=0, world=1)` is the one-process run.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from torch import nn

BATCHES, BATCH = 5, 3  # uneven over 2 processes: 3 batches and 2


def evaluators(model):
    from camfast.metrics import ROAD, AverageDropIncrease, DeletionInsertion
    from camfast.wsol import BoxEvaluator, MaskEvaluator

    return {
        "maxboxacc_v2": BoxEvaluator(cam_curve_interval=0.01),
        "maxboxacc_v1": BoxEvaluator(version=1, cam_curve_interval=0.01),
        "pxap": MaskEvaluator(cam_curve_interval=0.01),
        "average_drop": AverageDropIncrease(model, batch_size=4),
        "deletion_insertion_rise": DeletionInsertion(model, preset="rise", batch_size=16),
        "deletion_insertion_torchcam": DeletionInsertion(model, preset="torchcam", batch_size=16),
        "road": ROAD(model, percentiles=[20, 50, 80], noise=0, batch_size=8),
    }


def batch(i: int):
    g = torch.Generator().manual_seed(100 + i)
    x = torch.randn(BATCH, 3, 16, 16, generator=g)
    cams = torch.rand(BATCH, 16, 16, generator=g)
    targets = torch.randint(0, 5, (BATCH,), generator=g)
    boxes = np.array([[[2, 3, 9, 12]], [[0, 0, 15, 15]], [[5, 5, 6, 8]]])
    masks = (torch.rand(BATCH, 16, 16, generator=g) < 0.4).numpy().astype(np.uint8)
    correct = np.array([True, False, True])
    return x, cams, targets, boxes, masks, correct


def evaluate(rank: int = 0, world: int = 1) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    metrics = evaluators(model)
    for i in range(rank, BATCHES, world):
        x, cams, targets, boxes, masks, correct = batch(i)
        scoremaps = cams.double()
        metrics["maxboxacc_v2"].update(scoremaps, boxes, correct)
        metrics["maxboxacc_v1"].update(scoremaps, boxes, correct)
        metrics["pxap"].update(scoremaps, masks)
        for name in ("average_drop", "deletion_insertion_rise", "deletion_insertion_torchcam", "road"):
            metrics[name].update(x, cams, targets)
    out = {}
    for name, metric in metrics.items():
        result = metric.compute()
        if name.startswith("maxboxacc"):
            result = {"curve": result.gt_known_curve.tolist(), "top1": result.top1_curve.tolist(),
                      "value": result.value}
        elif name == "pxap":
            result = result.pxap
        out[name] = result
    return out


if __name__ == "__main__":
    torch.distributed.init_process_group("gloo")
    results = evaluate(torch.distributed.get_rank(), torch.distributed.get_world_size())
    if torch.distributed.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f)
    torch.distributed.destroy_process_group()
    os._exit(0)
