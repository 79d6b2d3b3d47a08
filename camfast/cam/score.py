"""Score-CAM and its smoothed (SS-CAM) and integrated (IS-CAM) variants.

Every flag behind the three presets is explicit; see ScoreCAM's docstring and docs/explainers.md
for the math and the sources.
"""

from __future__ import annotations

import contextlib
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_positive
from ._base import Explainer
from ._noise import NoiseStream, cpu_generator

PRESETS = {
    # haofanwang/Score-CAM cam/scorecam.py: probabilities, constant maps skipped, the score-weighted
    # sum of the upsampled raw maps, ReLU at input resolution.
    "official": dict(score="prob", baseline="none", channel_softmax=False, normalize_stage="upsampled",
                     align_corners=False, skip_constant=True, combine="upsampled"),
    # torchcam 0.5.0 ScoreCAM: logit minus the unmasked input's logit, softmax over channels, maps
    # normalised before upsampling, ReLU(sum_k w_k A_k) at feature resolution.
    "torchcam": dict(score="logit", baseline="input", channel_softmax=True, normalize_stage="feature",
                     align_corners=False, skip_constant=False, combine="feature"),
    # grad-cam 1.5.7 ScoreCAM: logit, softmax over channels, UpsamplingBilinear2d (align_corners=True),
    # ReLU(sum_k w_k A_k) at feature resolution.
    "grad-cam": dict(score="logit", baseline="none", channel_softmax=True, normalize_stage="upsampled",
                     align_corners=True, skip_constant=False, combine="feature"),
}


def _masks(act, image, align_corners, normalize_stage, backend=None):
    """[B, 1, h, w] maps x [B, C, H, W] images -> masked images [B, C, H, W] and is_constant [B]."""
    import camfast

    masks, constant = camfast.score_cam_masks(act, image, align_corners=align_corners,
                                              normalize_stage=normalize_stage, return_constant=True,
                                              backend=backend)
    return masks[:, 0], constant[:, 0]


class ScoreCAM(Explainer):
    """Score-CAM (Wang et al., CVPR 2020 workshops), with the semantics of a named source.

    For each map A_k of the target layer (image n, class c):
        U_k = bilinear upsample of A_k to the input size (`align_corners`)
        M_k = (U_k - min) / (max - min)     ("upsampled"; "feature" normalises A_k, then upsamples)
        s_k = score_c(model(X * M_k)) - score_c(baseline)
        w_k = softmax_k(s_k) if channel_softmax else s_k
    combine="upsampled": map = ReLU(sum_k w_k U_k) at input resolution (authors' code)
    combine="feature":   map = ReLU(sum_k w_k A_k) at feature resolution, then upsampled (peers)
    and the output is min-max normalised per image. A constant map gives a zero mask: with
    skip_constant it contributes nothing (authors' code), otherwise its masked input is a zero
    image whose score enters like any other (grad-cam, torchcam).

    Presets (flags left as None take the preset's value):
        "official": score="prob", baseline="none", channel_softmax=False, normalize_stage="upsampled",
                    align_corners=False, skip_constant=True, combine="upsampled"
        "torchcam": score="logit", baseline="input", channel_softmax=True, normalize_stage="feature",
                    align_corners=False, skip_constant=False, combine="feature"
        "grad-cam": score="logit", baseline="none", channel_softmax=True, normalize_stage="upsampled",
                    align_corners=True, skip_constant=False, combine="feature"

    Exact speed-ups (fast=True, the default): every constant map has the same all-zero masked
    input, so one forward of a zero image scores them all (or none, when skipped); the weighted sum
    is taken at feature resolution and upsampled once (bilinear upsampling is linear); masks come
    from the fused `camfast.score_cam_masks` op, `batch_size` masked images per forward, in chunks
    that mix images; scores stay on the device. The one host sync per call reads how many maps
    are not constant, which sizes the loop. fast=False forwards every map, constant ones included,
    with the reference mask op: the plain algorithm, for checking.

    Args:
        score: "prob" (softmax over classes, then the class's probability) or "logit".
        baseline: "none", "input" (the unmasked image; no extra forward), "zeros" (a black image)
            or a Tensor[C, H, W] / [N, C, H, W]. Under channel_softmax it has no effect.
        autocast: a dtype (torch.bfloat16, torch.float16) to run the masked forwards under
            torch.autocast; changes the numbers slightly.
        channels_last: feed the masked images in channels_last memory format.
        max_channels: APPROXIMATION: keep only the k maps with the largest activation mass
            (sum of |A_k|) per image; the others get weight 0.
        progress: a tqdm bar over the chunks.

    Example:
        >>> import torch
        >>> from camfast.cam import ScoreCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> with ScoreCAM(model, model[1], preset="torchcam", batch_size=4) as explainer:
        ...     maps = explainer(torch.rand(2, 3, 16, 16), targets=[0, 4])
        >>> maps.shape
        torch.Size([2, 16, 16])
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, preset: str = "official",
                 batch_size: int = 16, *, score: str | None = None, baseline=None,
                 channel_softmax: bool | None = None, normalize_stage: str | None = None,
                 align_corners: bool | None = None, skip_constant: bool | None = None,
                 combine: str | None = None, autocast: torch.dtype | None = None, channels_last: bool = False,
                 max_channels: int | None = None, progress: bool = False, fast: bool = True,
                 reshape_transform=None):
        super().__init__(model, target_layer, reshape_transform=reshape_transform)
        flags = dict(PRESETS[check_choice(preset, "preset", tuple(PRESETS))])
        given = dict(score=score, baseline=baseline, channel_softmax=channel_softmax,
                     normalize_stage=normalize_stage, align_corners=align_corners,
                     skip_constant=skip_constant, combine=combine)
        flags.update({k: v for k, v in given.items() if v is not None})
        self.preset = preset
        self.score = check_choice(flags["score"], "score", ("prob", "logit"))
        self.baseline = flags["baseline"]
        if not isinstance(self.baseline, torch.Tensor):
            check_choice(self.baseline, "baseline", ("none", "input", "zeros"))
        elif not self.baseline.dtype.is_floating_point or self.baseline.dim() not in (3, 4):
            raise TypeError("baseline must be 'none', 'input', 'zeros' or a float Tensor [C, H, W] or [N, C, H, W], "
                            f"got {self.baseline.dtype} of shape {tuple(self.baseline.shape)}")
        self.channel_softmax = bool(flags["channel_softmax"])
        self.normalize_stage = check_choice(flags["normalize_stage"], "normalize_stage", ("upsampled", "feature"))
        self.align_corners = bool(flags["align_corners"])
        self.skip_constant = bool(flags["skip_constant"])
        self.combine = check_choice(flags["combine"], "combine", ("upsampled", "feature"))
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.max_channels = None if max_channels is None else _positive_int(max_channels, "max_channels")
        if autocast is not None and autocast not in (torch.float16, torch.bfloat16):
            raise ValueError(f"autocast must be None, torch.float16 or torch.bfloat16, got {autocast}")
        self.autocast, self.channels_last = autocast, bool(channels_last)
        self.progress, self.fast = bool(progress), bool(fast)

    # How many masked inputs each map needs, and whether a zero mask keeps the input at zero
    # (then every constant map is scored by one forward of a zero image).
    samples = 1
    zero_mask_shared = True

    def sample_inputs(self, masked: torch.Tensor, images: torch.Tensor):
        """The inputs to forward for one chunk of masked images (Score-CAM: the masks themselves)."""
        yield masked

    def _explain(self, x, targets):
        base = self._baseline_image(x)  # checked before any forward
        logits, (act,) = self.forward(x)
        scores = self.scores(logits, targets, x.shape[0])
        act = self._select_channels(act)
        masked, skipped = self._masked_scores(x, act, scores.classes)  # [N, K, T], [N, K]
        masked = masked - self._baseline_score(x, base, logits, scores.classes)[:, None]
        skipped = skipped[:, :, None]
        if self.channel_softmax:
            weights = torch.softmax(masked.masked_fill(skipped, float("-inf")), dim=1)
        else:
            weights = masked
        weights = weights.masked_fill(skipped, 0).to(act.dtype)  # also clears all-skipped NaN rows
        cam = torch.einsum("nkt,nkhw->nthw", weights, act)
        if self.combine == "upsampled":
            # sum_k w_k U_k = U(sum_k w_k A_k): bilinear upsampling is linear, so upsample once.
            cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=self.align_corners)
        return scores.shape_maps(cam.relu())

    def _select_channels(self, act):
        """max_channels (an approximation): the k maps of largest activation mass per image."""
        if self.max_channels is None or self.max_channels >= act.shape[1]:
            return act
        top = act.abs().sum((2, 3)).topk(self.max_channels, dim=1).indices
        return act.gather(1, top[:, :, None, None].expand(-1, -1, *act.shape[2:]))

    def _score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scores [B, T] of the classes target [B, T]."""
        logits = logits.float()
        if self.score == "prob":
            logits = torch.softmax(logits, dim=1)
        return logits.gather(1, target)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(inputs.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with ctx:
            return self.model(inputs)

    def _baseline_image(self, x) -> torch.Tensor | None:
        """A tensor baseline as a batch like x (None for the named baselines)."""
        if not isinstance(self.baseline, torch.Tensor):
            return None
        base = self.baseline.to(device=x.device, dtype=x.dtype)
        if base.shape[-3:] != x.shape[1:] or (base.dim() == 4 and base.shape[0] not in (1, x.shape[0])):
            raise ValueError(f"baseline must have shape {tuple(x.shape[1:])} or {tuple(x.shape)}, "
                             f"got {tuple(base.shape)}")
        return base.expand(x.shape)

    def _baseline_score(self, x, base, logits, target):
        if base is not None:
            return self._score(self._forward(base), target)
        if self.baseline == "input":
            return self._score(logits, target)
        if self.baseline == "zeros":
            return self._score(self._forward(x.new_zeros(1, *x.shape[1:])).expand(x.shape[0], -1), target)
        return torch.zeros_like(target, dtype=torch.float32)

    def _masked_scores(self, x, act, target):
        """Mean score of each map's masked input(s) for each class [N, K, T], and which maps are
        skipped [N, K] bool. The masked inputs do not depend on the class: T classes cost no
        extra forward."""
        n, k = act.shape[:2]
        flat = act.reshape(n * k, 1, *act.shape[2:])
        constant = (flat.amax((1, 2, 3)) == flat.amin((1, 2, 3)))
        if self.fast and (self.skip_constant or self.zero_mask_shared):
            todo = (~constant).nonzero()[:, 0]  # the one host sync: it sizes the loop
        else:
            todo = torch.arange(n * k, device=x.device)
        scores = torch.zeros(n * k, target.shape[1], dtype=torch.float32, device=x.device)
        skipped = constant.clone() if self.skip_constant else torch.zeros_like(constant)
        backend = None if self.fast else "reference"
        for chunk in self._chunks(todo):
            owner = torch.div(chunk, k, rounding_mode="floor")
            # One image: a stride-0 view (the op reads any strides) instead of a copy per chunk.
            images = x.expand(len(chunk), -1, -1, -1) if n == 1 else x.index_select(0, owner)
            masked, chunk_constant = _masks(flat.index_select(0, chunk), images, self.align_corners,
                                            self.normalize_stage, backend)
            if self.skip_constant:  # a map that rounds to constant once upsampled
                skipped[chunk] |= chunk_constant
            total = sum(self._score(self._forward(inp), target[owner]) for inp in self.sample_inputs(masked, images))
            scores[chunk] = total / self.samples
        if todo.numel() < n * k and not self.skip_constant:
            zero = self._forward(x.new_zeros(1, *x.shape[1:])).expand(n, -1)
            scores = torch.where(constant[:, None], self._score(zero, target).repeat_interleave(k, 0), scores)
        return scores.view(n, k, -1), skipped.view(n, k)

    def _chunks(self, todo: torch.Tensor):
        chunks = todo.split(self.batch_size)
        if not self.progress:
            return chunks
        from tqdm.auto import tqdm

        return tqdm(chunks, desc=type(self).__name__, unit="chunk")

    def __repr__(self) -> str:
        return (f"{super().__repr__()[:-1]}, preset={self.preset!r}, batch_size={self.batch_size}, "
                f"score={self.score!r}, channel_softmax={self.channel_softmax}, "
                f"normalize_stage={self.normalize_stage!r}, align_corners={self.align_corners}, "
                f"skip_constant={self.skip_constant}, combine={self.combine!r})")


class SSCAM(ScoreCAM):
    """SS-CAM (Wang et al. 2020), torchcam's form: each map is scored `num_samples` times with
    N(0, std^2) noise added to its mask at input resolution, X * (M_k + delta); the weight is the
    mean score, then the preset's combination (default "torchcam"). Constant maps cannot share a
    forward here (their noisy masks differ), so they are forwarded unless skip_constant.

    noise="torchcam" (default): delta is drawn on the CPU from `generator` (default: torch's global
    CPU generator) as torchcam draws it, one [N, K, H, W] tensor per sample, so that after
    `torch.manual_seed(s)` camfast and torchcam add the same noise (with the torchcam preset, and
    batch_size or H * W a multiple of 16: see camfast.cam._noise). noise="device": drawn on the
    input's device from `generator` (a generator of that device), in camfast's chunk order;
    faster on a GPU, not torchcam's values.

    Example:
        >>> import torch
        >>> from camfast.cam import SSCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> generator = torch.Generator().manual_seed(0)
        >>> explainer = SSCAM(model, model[1], num_samples=2, std=0.5, generator=generator)
        >>> explainer(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 16, 16])
    """

    zero_mask_shared = False

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, preset: str = "torchcam",
                 batch_size: int = 16, num_samples: int = 35, std: float = 2.0,
                 generator: torch.Generator | None = None, noise: str = "torchcam", **flags):
        super().__init__(model, target_layer, preset, batch_size, **flags)
        self.samples = _positive_int(num_samples, "num_samples")
        self.std = check_positive(std, "std")
        self.noise = check_choice(noise, "noise", ("torchcam", "device"))
        self.generator = cpu_generator(generator) if self.noise == "torchcam" else generator
        self._stream = None

    def _masked_scores(self, x, act, target):
        if self.noise == "torchcam":
            self._stream = NoiseStream(act.shape[0] * act.shape[1], x.shape[2:], self.samples, self.std,
                                       self.generator)
        try:
            return super()._masked_scores(x, act, target)
        finally:
            self._stream = None

    def sample_inputs(self, masked, images):
        for m in range(self.samples):
            if self._stream is not None:
                noise = self._stream.draw(m, images.shape[0]).to(images.device, images.dtype)
            else:
                noise = self.std * torch.randn((images.shape[0], 1, *images.shape[2:]), generator=self.generator,
                                               dtype=images.dtype, device=images.device)
            yield masked + noise * images


class ISCAM(ScoreCAM):
    """IS-CAM (Naidu et al. 2020), torchcam's form: map k is scored on c_i * (X * M_k) for
    i = 1..num_samples with the cumulative c_i = sum_{j=1..i} j / num_samples (torchcam's code; up to
    5.5 for 10 samples), and the weight is the mean score. A zero mask stays zero, so constant
    maps still share one forward.

    Example:
        >>> import torch
        >>> from camfast.cam import ISCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
        >>> ISCAM(model, model[1], num_samples=3)(torch.rand(2, 3, 16, 16), targets=[1, 2]).shape
        torch.Size([2, 16, 16])
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, preset: str = "torchcam",
                 batch_size: int = 16, num_samples: int = 10, **flags):
        super().__init__(model, target_layer, preset, batch_size, **flags)
        self.samples = _positive_int(num_samples, "num_samples")

    def sample_inputs(self, masked, images):
        coeff = 0.0
        for i in range(self.samples):
            coeff += (i + 1) / self.samples
            yield coeff * masked


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
