"""The faithfulness metrics as stateful metrics: update per batch, compute over the dataset.

They are torchmetrics metrics when torchmetrics is installed (`pip install camfast[metrics]`):
`compute` gathers the per-image values of every process, so torchrun's shards give the numbers of
one process; `reset` and Lightning logging work as for any torchmetrics metric. The means are
taken with an exactly rounded sum, so they do not depend on the order in which the processes'
values arrive. Images whose map holds a NaN are left out of the means and counted in `nan_count`.

The model is held by reference, not registered as a submodule: the metric's state_dict and
`.to()` do not touch it.
"""

from __future__ import annotations

import torch

from .._metric import Metric, concatenated, order_free_mean
from .average_drop import average_drop_increase
from .deletion_insertion import deletion_insertion
from .road import road


class _PerImageMetric(Metric):
    """Keeps one value per image (and target class) for each name in `values`."""

    full_state_update = False
    values: tuple[str, ...] = ()

    def __init__(self, model: torch.nn.Module, **options):
        super().__init__()
        object.__setattr__(self, "model", model)  # a plain attribute, not a submodule
        self.options = options
        for name in self.values:
            self.add_state(name, [], dist_reduce_fx="cat")
        self.add_state("nan_count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def _record(self, **per_image: torch.Tensor) -> None:
        first = next(iter(per_image.values()))
        self.nan_count += first.isnan().sum().cpu()
        for name, value in per_image.items():
            getattr(self, name).append(value.detach().double().flatten().cpu())

    def compute(self) -> dict[str, float]:
        return {name: order_free_mean(concatenated(getattr(self, name))) for name in self.values}


class AverageDropIncrease(_PerImageMetric):
    """Average Drop and Increase in Confidence over a dataset, as fractions (x 100 for percent).

    `update(x, cams, targets=None)` takes a batch as `average_drop_increase` does, with the
    model and its options (score, batch_size) given here. compute() -> {"average_drop",
    "increase_in_confidence"}.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    >>> metric = AverageDropIncrease(model)
    >>> metric.update(torch.randn(2, 3, 8, 8), torch.rand(2, 4, 4))
    >>> sorted(metric.compute())
    ['average_drop', 'increase_in_confidence']
    """

    higher_is_better = False
    values = ("average_drop", "increase_in_confidence")

    def __init__(self, model, *, score="prob", batch_size: int = 32):
        super().__init__(model, score=score, batch_size=batch_size)

    def update(self, x, cams, targets=None) -> None:
        drop, increase = average_drop_increase(self.model, x, cams, targets, **self.options)
        self._record(average_drop=drop, increase_in_confidence=torch.where(drop.isnan(), torch.nan, increase.double()))


class DeletionInsertion(_PerImageMetric):
    """Mean deletion and insertion areas over a dataset (options as `deletion_insertion`).

    compute() -> {"deletion_auc", "insertion_auc"}.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    >>> metric = DeletionInsertion(model, preset="torchcam")
    >>> metric.update(torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8))
    >>> sorted(metric.compute())
    ['deletion_auc', 'insertion_auc']
    """

    values = ("deletion_auc", "insertion_auc")

    def __init__(self, model, *, preset: str = "rise", steps=None, baseline=None, score=None, batch_size: int = 32):
        super().__init__(model, preset=preset, steps=steps, baseline=baseline, score=score, batch_size=batch_size)

    def update(self, x, cams, targets=None) -> None:
        result = deletion_insertion(self.model, x, cams, targets, **self.options)
        self._record(deletion_auc=result.deletion_auc, insertion_auc=result.insertion_auc)


class ROAD(_PerImageMetric):
    """The mean ROAD value over a dataset (options as `road`). compute() -> {"road"}.

    With noise > 0, each process draws from its own generator (or the global one), so sharded runs
    give the same numbers as one process only with noise=0.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    >>> metric = ROAD(model, percentiles=[50], noise=0)
    >>> metric.update(torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8))
    >>> list(metric.compute())
    ['road']
    """

    values = ("road",)
    higher_is_better = True  # for "combined" and "lerf"; MoRF values are better when lower

    def __init__(self, model, *, order: str = "combined", percentiles=(10, 20, 30, 40, 50, 60, 70, 80, 90),
                 score="logit", noise: float = 0.01, generator=None, legacy: bool = False, batch_size: int = 32):
        super().__init__(model, order=order, percentiles=percentiles, score=score, noise=noise, generator=generator,
                         legacy=legacy, batch_size=batch_size)

    def update(self, x, cams, targets=None) -> None:
        self._record(road=road(self.model, x, cams, targets, **self.options).value)
