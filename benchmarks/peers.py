"""The peer libraries, for the benchmark and the equivalence check only.

grad-cam 1.5.7 (import pytorch_grad_cam), torchcam 0.5.0 and captum 0.9.0 are installed without
their dependencies (`make bench`), because a normal resolve pulls a CUDA torch and torchvision.
grad-cam imports torchvision at import time, for helpers that lie off the CAM code paths (image
transforms, `sess.py`'s resize, `box_iou` for detection targets). When torchvision is missing,
`load("grad-cam")` registers a small stand-in module for it in `sys.modules`; nothing outside this
file installs it, so camfast and its tests never see it.

Each `<peer>_explain` function returns the peer's maps as a float tensor: grad-cam's at input
resolution (its own output), torchcam's and captum's at feature resolution (theirs).
`as_input_maps` and `correlation` define what "agrees with a peer" means.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy
import torch
import torch.nn.functional as F

MODULES = {"grad-cam": "pytorch_grad_cam", "torchcam": "torchcam", "captum": "captum"}
_NOTED: set[str] = set()


def _torchvision_stub() -> types.ModuleType:
    """What grad-cam 1.5.7 imports from torchvision; none of it runs on a CAM path."""

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class ToTensor:
        def __call__(self, image):
            return torch.as_tensor(image).permute(2, 0, 1).float() / 255

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

        def __call__(self, x):
            return (x - self.mean) / self.std

    def resize(x, size, antialias=True, **_):
        size = [size, size] if isinstance(size, int) else list(size)
        batched = x if x.dim() == 4 else x[None]
        out = F.interpolate(batched.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)
        return out if x.dim() == 4 else out[0]

    def box_iou(a, b):
        area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
        lt, rb = torch.max(a[:, None, :2], b[:, :2]), torch.min(a[:, None, 2:], b[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(2)
        return inter / (area(a)[:, None] + area(b) - inter)

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.0.0+camfast-stub"
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Compose, tv.transforms.ToTensor, tv.transforms.Normalize = Compose, ToTensor, Normalize
    tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    tv.transforms.functional.resize = resize
    tv.ops = types.ModuleType("torchvision.ops")
    tv.ops.box_iou = box_iou
    return tv


def install_torchvision_stub() -> None:
    """Register the stand-in, only where no real torchvision is installed."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    tv = _torchvision_stub()
    for name, module in [("torchvision", tv), ("torchvision.transforms", tv.transforms),
                         ("torchvision.transforms.functional", tv.transforms.functional), ("torchvision.ops", tv.ops)]:
        sys.modules[name] = module


def load(peer: str):
    """The peer's top-level module, or None (with a note printed once) when it is not installed."""
    name = MODULES[peer]
    if importlib.util.find_spec(name) is None:
        if peer not in _NOTED:
            _NOTED.add(peer)
            print(f"  note: {peer} is not installed here, its providers are skipped (make bench installs it)")
        return None
    if peer == "grad-cam":
        # torchmetrics probes find_spec("torchvision") on import, which fails on the stand-in
        # (no __spec__): import it first where it is installed, as camfast's metrics use it.
        if importlib.util.find_spec("torchmetrics") is not None:
            importlib.import_module("torchmetrics")
        install_torchvision_stub()
        module = importlib.import_module(name)
        # grad-cam's ScoreCAM and AblationCAM draw a tqdm bar per image; silence them (a no-op wrapper).
        for method in ("score_cam", "ablation_cam"):
            importlib.import_module(f"pytorch_grad_cam.{method}").tqdm = types.SimpleNamespace(
                tqdm=lambda iterable, *args, **kwargs: iterable)
        return module
    return importlib.import_module(name)


def available(*peers: str) -> bool:
    return all(load(p) is not None for p in peers)


def as_input_maps(maps: torch.Tensor, size) -> torch.Tensor:
    """A peer's maps [N, h, w] as camfast returns its own: resized to `size` (bilinear,
    align_corners=False) and min-maxed to [0, 1] per image."""
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


def _ints(targets) -> list[int]:
    return [int(t) for t in targets]


def _layers(layer) -> list:
    return list(layer) if isinstance(layer, (list, tuple)) else [layer]


def gradcam_explain(method: str, model, layer, x, targets, batch_size: int | None = None, objective: str = "logit",
                    **options) -> torch.Tensor:
    """grad-cam's `method` (e.g. "ScoreCAM", "GradCAM", "GradCAMPlusPlus"): [N, H, W] at input resolution.

    `layer`: a module or a list of modules (grad-cam fuses them by its mean rule). The object (and
    so its hooks) lives only for this call: grad-cam's hooks copy the activation to the host on
    every forward, which would slow down anything else run on the same model. `objective`:
    "logit" (ClassifierOutputTarget) or "rest" (ClassifierOutputReST, ShapleyCAM's paper).
    `options` go to the method's constructor (e.g. AblationCAM's ratio_channels_to_ablate).
    """
    lib = load("grad-cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

    target = {"logit": ClassifierOutputTarget, "rest": ClassifierOutputReST}[objective]
    with getattr(lib, method)(model=model, target_layers=_layers(layer), **options) as cam:
        if batch_size is not None:
            cam.batch_size = batch_size
        out = cam(input_tensor=x, targets=[target(t) for t in _ints(targets)])
    return torch.from_numpy(out)


def gradcam_finer(model, layer, x, targets=None) -> torch.Tensor:
    """grad-cam's FinerCAM (base GradCAM, its defaults: alpha 1, comparison ranks 1-3): [N, H, W].

    grad-cam applies the Finer-CAM objective only when it picks the targets itself: with
    targets=None for the predicted classes in one call; otherwise for one `target_idx` shared by
    the batch, so each image runs alone with its own class.
    """
    lib = load("grad-cam")
    with lib.FinerCAM(model=model, target_layers=_layers(layer)) as cam:
        if targets is None:
            return torch.from_numpy(cam(input_tensor=x, targets=None))
        maps = [cam(input_tensor=x[i:i + 1], targets=None, target_idx=t) for i, t in enumerate(_ints(targets))]
    return torch.from_numpy(numpy.concatenate(maps))


def torchcam_explain(method: str, model, layer_name, x, targets, **kwargs) -> torch.Tensor:
    """torchcam's `method` (e.g. "ScoreCAM", "GradCAM", "ISCAM", "CAM"): [N, h, w] at feature resolution.

    `layer_name`: a name or a list of names; several layers' maps are fused by the extractor's
    own `fuse_cams` (which returns a single layer's map unchanged).
    """
    methods = importlib.import_module("torchcam.methods")
    cls = getattr(methods, method)
    gradient_based = method not in ("CAM", "ScoreCAM", "SSCAM", "ISCAM")
    with cls(model, target_layer=layer_name, input_shape=tuple(x.shape[1:]), **kwargs) as extractor:
        with torch.enable_grad() if gradient_based else torch.no_grad():
            scores = model(x)
            cams = extractor(class_idx=_ints(targets), scores=scores)
        return extractor.fuse_cams(cams).detach()


def captum_gradcam(model, layer, x, targets) -> torch.Tensor:
    """captum's LayerGradCam with relu_attributions=True: [N, h, w] at feature resolution, raw."""
    from captum.attr import LayerGradCam

    return LayerGradCam(model, layer).attribute(x, target=_ints(targets), relu_attributions=True)[:, 0].detach()
