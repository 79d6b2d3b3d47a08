"""The WSOL protocol's metadata (clovaai/wsolevaluation) and a Dataset over it.

A split's metadata folder holds, one record a line, comma-separated, keyed by image id (the
image's path under the image folder):

    image_ids.txt      <id>
    class_labels.txt   <id>,<class>
    image_sizes.txt    <id>,<width>,<height>
    localization.txt   <id>,<x0>,<y0>,<x1>,<y1>        boxes (CUB, ImageNet), one line per box
                       <id>,<mask path>,<ignore path>  masks (OpenImages), one line per mask; the
                                                       ignore path only on an id's first line

Every problem is reported as a MetadataError naming the file and line (or the image id) before
any image is read. Images are read with OpenCV, resized to size x size bilinearly with
antialiasing (as torchvision's Resize on PIL images) and normalised with the ImageNet mean and
standard deviation, as the protocol's test transform. Boxes are scaled as the protocol does
(`resize_boxes`); masks are resized with nearest neighbours, thresholded at 0.5 and merged, and
the ignore region (the ignore mask minus the objects) is marked 255 (the protocol's get_mask).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .boxes import resize_boxes

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class MetadataError(ValueError):
    """Bad WSOL metadata or a missing file, with the file and line it comes from."""


@dataclasses.dataclass
class Metadata:
    image_ids: list[str]
    labels: dict[str, int]
    sizes: dict[str, tuple[int, int]]  # (width, height)
    boxes: dict[str, np.ndarray] | None  # [G, 4] inclusive corners at the image's own size
    masks: dict[str, tuple[list[str], str]] | None  # mask paths, ignore path

    @property
    def kind(self) -> str:
        return "boxes" if self.boxes is not None else "masks"


def _records(path: Path, fields: tuple[int, ...]):
    """(line number, fields) of each non-empty line, checked to have one of the field counts."""
    if not path.is_file():
        raise MetadataError(f"{path}: file not found")
    with path.open() as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split(",")
            if len(parts) not in fields or not parts[0]:
                expected = " or ".join(str(n) for n in fields)
                raise MetadataError(f"{path}:{number}: expected {expected} comma-separated fields, got {line!r}")
            yield number, parts


def _ints(path: Path, number: int, values: list[str], what: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise MetadataError(f"{path}:{number}: {what} must be integers, got {','.join(values)!r}") from None


def read_metadata(folder) -> Metadata:
    """Read and check a split's metadata folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetadataError(f"{folder}: metadata folder not found")
    ids, seen = [], set()
    for number, (image_id,) in _records(folder / "image_ids.txt", (1,)):
        if image_id in seen:
            raise MetadataError(f"{folder / 'image_ids.txt'}:{number}: image id {image_id!r} is listed twice")
        seen.add(image_id)
        ids.append(image_id)
    labels = {}
    path = folder / "class_labels.txt"
    for number, (image_id, label) in _records(path, (2,)):
        (labels[image_id],) = _ints(path, number, [label], "the class label")
    sizes = {}
    path = folder / "image_sizes.txt"
    for number, (image_id, *size) in _records(path, (3,)):
        width, height = _ints(path, number, size, "width and height")
        if width <= 0 or height <= 0:
            raise MetadataError(f"{path}:{number}: width and height must be positive, got {width}x{height}")
        sizes[image_id] = (width, height)
    boxes, masks = _localization(folder / "localization.txt", sizes)
    meta = Metadata(ids, labels, sizes, boxes, masks)
    for image_id in ids:
        for what, table, name in (("class label", labels, "class_labels.txt"),
                                  ("localization", boxes if boxes is not None else masks, "localization.txt")):
            if image_id not in table:
                raise MetadataError(f"{folder / name}: no {what} for image id {image_id!r}")
        if boxes is not None and image_id not in sizes:
            raise MetadataError(f"{folder / 'image_sizes.txt'}: no size for image id {image_id!r}")
    if not ids:
        raise MetadataError(f"{folder / 'image_ids.txt'}: no image ids")
    return meta


def _localization(path: Path, sizes: dict):
    """Boxes (5 fields a line) or masks (3 fields), whichever the first line holds."""
    boxes: dict[str, list] = {}
    masks: dict[str, tuple[list[str], str]] = {}
    kind = None
    for number, parts in _records(path, (5, 3)):
        line_kind = "boxes" if len(parts) == 5 else "masks"
        if kind not in (None, line_kind):
            raise MetadataError(f"{path}:{number}: mixes boxes and masks (the first line has {kind})")
        kind = line_kind
        image_id = parts[0]
        if kind == "masks":
            if image_id in masks:
                if parts[2]:
                    raise MetadataError(f"{path}:{number}: only an image's first mask line may name an ignore mask")
                masks[image_id][0].append(parts[1])
            else:
                masks[image_id] = ([parts[1]], parts[2])
            continue
        x0, y0, x1, y1 = _ints(path, number, parts[1:], "box corners")
        width, height = sizes.get(image_id, (None, None))
        if width is None:
            raise MetadataError(f"{path}:{number}: image id {image_id!r} has no size in image_sizes.txt")
        # Corners may reach the width and height: the datasets' boxes are often x + w, y + h.
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise MetadataError(f"{path}:{number}: box ({x0}, {y0}, {x1}, {y1}) lies outside its "
                                f"{width}x{height} image or has x1 < x0 or y1 < y0")
        boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
    if kind is None:
        raise MetadataError(f"{path}: no localization records")
    if kind == "masks":
        return None, masks
    return {k: np.array(v, dtype=np.int64) for k, v in boxes.items()}, None


def check_files(meta: Metadata, images, masks=None) -> None:
    """Every image (and mask) file exists, before any is read."""
    images = Path(images)
    for image_id in meta.image_ids:
        if not (images / image_id).is_file():
            raise MetadataError(f"{images / image_id}: image file not found (image id {image_id!r})")
        if meta.masks is not None:
            paths, ignore = meta.masks[image_id]
            for p in paths + ([ignore] if ignore else []):
                if masks is None or not (Path(masks) / p).is_file():
                    raise MetadataError(f"{Path(masks or '.') / p}: mask file not found (image id {image_id!r}; "
                                        "give the mask folder with --masks)")


def load_image(path: Path, size: int) -> torch.Tensor:
    """[3, size, size] float32: RGB, bilinear with antialiasing, ImageNet-normalised."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MetadataError(f"{path}: not a readable image")
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float() / 255
    resized = F.interpolate(rgb[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return (resized - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def load_mask(root: Path, paths: list[str], ignore: str, size: int) -> np.ndarray:
    """The protocol's get_mask: 1 on the objects, 255 on the ignore region, 0 elsewhere."""

    def read(p):
        image = cv2.imread(str(root / p), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise MetadataError(f"{root / p}: not a readable mask image")
        return cv2.resize(np.float32(image), (size, size), interpolation=cv2.INTER_NEAREST) > 0.5

    objects = np.stack([read(p) for p in paths]).any(0)
    ignored = (read(ignore) & ~objects) if ignore else np.zeros_like(objects)
    return objects.astype(np.uint8) + 255 * ignored.astype(np.uint8)


class WSOLDataset(torch.utils.data.Dataset):
    """(index, image [3, size, size], label, localization) per image id, in metadata order.

    The localization is boxes [G, 4] scaled to size x size, or a mask [size, size] (uint8, 255 =
    ignore). `collate` batches them.
    """

    def __init__(self, meta: Metadata, images, masks=None, size: int = 224):
        self.meta, self.images, self.masks, self.size = meta, Path(images), Path(masks) if masks else None, size

    def __len__(self) -> int:
        return len(self.meta.image_ids)

    def __getitem__(self, index: int):
        image_id = self.meta.image_ids[index]
        image = load_image(self.images / image_id, self.size)
        if self.meta.boxes is not None:
            where = resize_boxes(self.meta.boxes[image_id], self.meta.sizes[image_id], (self.size, self.size))
        else:
            where = load_mask(self.masks, *self.meta.masks[image_id], self.size)
        return index, image, self.meta.labels[image_id], where

    @staticmethod
    def collate(items):
        index, images, labels, where = zip(*items)
        return torch.tensor(index), torch.stack(images), torch.tensor(labels), list(where)
