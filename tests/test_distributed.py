"""Two training steps of a model using every camfast layer under DistributedDataParallel (two CPU
processes, gloo) leave the parameters a single process reaches on the concatenated batches.

Why the comparison is exact (float64, to summation order):
- DDP averages the gradients of the per-process losses. Every term of EveryLayer.loss is a batch
  mean, so the average of the two half-batch losses is the whole batch's loss.
- ADL draws its branch once per call from its own generator, seeded alike in every process: each
  step takes the same branch in both workers and in the single process (with seed 1: the drop
  mask, then the importance map); the drop mask's threshold is per sample, so splitting the batch
  does not change it.
- BatchNorm (in the attention branch) normalises with the statistics of the batch it sees, so two
  half batches and one whole batch normalise differently by design (SyncBatchNorm, which would
  share them, needs a GPU). The BatchNorm layers run in evaluation mode here, with fixed running
  statistics, which makes the model a per-sample function like every camfast layer is.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from camfast_testing.layer_models import EveryLayer

WORLD = 2
STEPS = 2
LR = 0.1


def _model() -> EveryLayer:
    torch.manual_seed(0)
    model = EveryLayer(generator=torch.Generator().manual_seed(1)).double().train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    return model


def _data():
    """(images, labels) of each step: 4 samples, split 2 + 2 between the workers."""
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
            for _ in range(STEPS)]


def _train(model: EveryLayer, forward, batches) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for images, labels in batches:
        optimizer.zero_grad()
        model.loss(forward(images), labels).backward()
        optimizer.step()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = _model()
        ddp = DistributedDataParallel(model)
        shards = [(images.chunk(WORLD)[rank], labels.chunk(WORLD)[rank]) for images, labels in _data()]
        _train(model, ddp, shards)
        torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    single = _model()
    initial = {name: t.clone() for name, t in single.state_dict().items()}
    _train(single, single, _data())
    expected = single.state_dict()
    for rank in range(WORLD):
        trained = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(trained, expected, rtol=1e-10, atol=1e-12, msg=lambda m: f"rank {rank}: {m}")
    moved = [name for name, p in single.named_parameters() if not torch.equal(p.detach(), initial[name])]
    assert len(moved) == len(list(single.parameters())), "a parameter did not train: the test would miss it"
