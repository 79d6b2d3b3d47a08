"""The faithfulness metrics of the peers, called on given CAMs, and a transcription of RISE's.

Shared by the metric tests (agreement) and bench_metrics.py (speed). torchcam 0.5.0's metrics
take a CAM extractor; `FixedCams` is one that hands back maps computed beforehand, so both sides
score exactly the same maps. grad-cam 1.5.7's metrics take the maps as a NumPy array.

`rise_*` is a transcription, line by line, of the RISE authors' evaluation (eclique/RISE,
`evaluation.py`: `gkern`, `auc`, `CausalMetric.single_run`; the notebook's settings: step 224,
`torch.zeros_like` for deletion, the gkern(11, 5) blur for insertion, a softmax on the model),
written from its published description for this comparison. Its 224 x 224 size is hard-coded,
as theirs is (HW = 224 * 224).
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
from torch import nn

from . import peers

RISE_HW = 224 * 224


class FixedCams:
    """A torchcam CAM extractor that returns the given maps [N, h, w] for any class."""

    def __init__(self, model: nn.Module, cams: torch.Tensor):
        self.model, self.cams = model, cams

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.cams]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def _logits_fn(score: str):
    return functools.partial(torch.softmax, dim=-1) if score == "prob" else None


def torchcam_average_drop(model, x, cams, targets, score: str = "logit") -> dict[str, float]:
    """torchcam's ClassificationMetric summary: {"avg_drop", "conf_increase"} (fractions)."""
    from torchcam.metrics import ClassificationMetric

    metric = ClassificationMetric(FixedCams(model, cams), _logits_fn(score))
    metric.update(x, class_idx=[int(t) for t in targets])
    return metric.summary()


def torchcam_deletion_insertion(model, x, cams, targets, score: str = "logit", steps: int = 20,
                                batch_size: int = 32) -> dict[str, float]:
    """torchcam's DeletionInsertionMetric summary: mean {"deletion_auc", "insertion_auc"}."""
    from torchcam.metrics import DeletionInsertionMetric

    metric = DeletionInsertionMetric(FixedCams(model, cams), _logits_fn(score), steps=steps, batch_size=batch_size)
    metric.update(x, class_idx=[int(t) for t in targets])
    return metric.summary()


def gradcam_targets(targets, score: str = "logit"):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    kind = ClassifierOutputSoftmaxTarget if score == "prob" else ClassifierOutputTarget
    return [kind(int(t)) for t in targets]


def gradcam_confidence_change(model, x, cams, targets, score: str = "logit") -> np.ndarray:
    """grad-cam's CamMultImageConfidenceChange: s' - s per image ([N] float32)."""
    peers.load("grad-cam")
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange

    return CamMultImageConfidenceChange()(x, cams.numpy(), gradcam_targets(targets, score), model)


@contextlib.contextmanager
def gradcam_noise(noise: float):
    """grad-cam's ROAD classes build NoisyLinearImputer() with noise 0.01; this sets another."""
    peers.load("grad-cam")
    from pytorch_grad_cam.metrics import road

    original = road.NoisyLinearImputer

    class Imputer(original):  # a subclass: __call__ looks up its static methods on the class
        def __init__(self, *args, **kwargs):
            super().__init__(noise=noise)

    road.NoisyLinearImputer = Imputer
    try:
        yield
    finally:
        road.NoisyLinearImputer = original


def gradcam_road(model, x, cams, targets, percentiles, noise: float = 0.0) -> dict[str, np.ndarray]:
    """grad-cam's ROADMostRelevantFirstAverage, ROADLeastRelevantFirstAverage and ROADCombined."""
    with gradcam_noise(noise):
        from pytorch_grad_cam.metrics import road

        maps, objs = cams.numpy(), gradcam_targets(targets)
        percentiles = list(percentiles)
        return {
            "morf": road.ROADMostRelevantFirstAverage(percentiles)(x, maps, objs, model),
            "lerf": road.ROADLeastRelevantFirstAverage(percentiles)(x, maps, objs, model),
            "combined": road.ROADCombined(percentiles)(x, maps, objs, model),
        }


def gradcam_road_combined(model, x, cams, targets, percentiles, noise: float = 0.01) -> np.ndarray:
    with gradcam_noise(noise):
        from pytorch_grad_cam.metrics.road import ROADCombined

        return ROADCombined(list(percentiles))(x, cams.numpy(), gradcam_targets(targets), model)


def gradcam_road_auto(model, x, cams, targets) -> np.ndarray:
    """grad-cam's ROADMostRelevantFirst(percentile='auto'), without noise: s' - s per image."""
    with gradcam_noise(0.0):
        from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst

        return ROADMostRelevantFirst("auto")(x, cams.numpy(), gradcam_targets(targets), model)


def sparse_impute(image: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """grad-cam's NoisyLinearImputer without noise: the sparse direct solve (scipy's spsolve)."""
    peers.load("grad-cam")
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    return NoisyLinearImputer(noise=0.0)(image, (~unknown).float())


# ---- transcription of the RISE authors' evaluation ------------------------------------------

def rise_gkern(klen: int, nsig: float) -> torch.Tensor:
    """gkern: a Gaussian-smoothed delta, one kernel per channel on the diagonal of [3, 3, k, k]."""
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    kern[0, 0] = k
    kern[1, 1] = k
    kern[2, 2] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_blur(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.conv2d(x, rise_gkern(11, 5), padding=11 // 2)


def rise_auc(arr: np.ndarray) -> float:
    """Normalized area under the curve: a trapezoid on a uniform grid."""
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def rise_single_run(model: nn.Module, img_tensor: torch.Tensor, explanation: np.ndarray, mode: str,
                    step: int = 224) -> np.ndarray:
    """CausalMetric(model, mode, step, substrate_fn).single_run for one [1, 3, 224, 224] image.

    `model` is wrapped in a softmax, as the authors' notebook does; the class is the top-1 of
    the unperturbed image; pixels go in order of decreasing saliency (np.flip of np.argsort).
    """
    model = nn.Sequential(model, nn.Softmax(dim=1))
    substrate_fn = torch.zeros_like if mode == "del" else rise_blur
    with torch.no_grad():
        pred = model(img_tensor)
        top, c = torch.max(pred, 1)
        c = c.cpu().numpy()[0]
        n_steps = (RISE_HW + step - 1) // step
        if mode == "del":
            start = img_tensor.clone()
            finish = substrate_fn(img_tensor)
        else:
            start = substrate_fn(img_tensor)
            finish = img_tensor.clone()
        scores = np.empty(n_steps + 1)
        salient_order = np.flip(np.argsort(explanation.reshape(-1, RISE_HW), axis=1), axis=-1)
        for i in range(n_steps + 1):
            pred = model(start)
            scores[i] = pred[0, c]
            if i < n_steps:
                coords = salient_order[:, step * i:step * (i + 1)]
                start.cpu().numpy().reshape(1, 3, RISE_HW)[0, :, coords] = \
                    finish.cpu().numpy().reshape(1, 3, RISE_HW)[0, :, coords]
    return scores
