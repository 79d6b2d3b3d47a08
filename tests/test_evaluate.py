"""`python -m camfast.evaluate` on a small synthetic dataset written in the WSOL metadata format
(PNG images on disk): one process and torchrun with two CPU processes give identical reports; bad
input is reported by file and line (or argument) and leaves nothing in --out."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is None, reason="needs torchmetrics")

MODEL_SOURCE = '''
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
'''


def write_dataset(root: Path, n: int = 11, masks: bool = False) -> dict:
    """n PNG images of varied sizes with a bright rectangle (the object), and their metadata."""
    rng = np.random.default_rng(0)
    images, meta = root / "images", root / "metadata"
    (images / "birds").mkdir(parents=True)
    meta.mkdir()
    ids, labels, sizes, loc = [], [], [], []
    for i in range(n):
        width, height = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        image = (rng.random((height, width, 3)) * 60).astype(np.uint8)
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = int(rng.integers(x0 + 5, width)), int(rng.integers(y0 + 5, height))
        image[y0:y1 + 1, x0:x1 + 1] = 200
        image_id = f"birds/{i:03d}.png"
        cv2.imwrite(str(images / image_id), image)
        ids.append(image_id)
        labels.append(f"{image_id},{i % 4}")
        sizes.append(f"{image_id},{width},{height}")
        if masks:
            mask = np.zeros((height, width), np.uint8)
            mask[y0:y1 + 1, x0:x1 + 1] = 255
            (root / "masks").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), mask)
            ignore = np.zeros_like(mask)
            ignore[:3] = 255
            cv2.imwrite(str(root / "masks" / f"{i:03d}_ignore.png"), ignore)
            loc.append(f"{image_id},{i:03d}.png,{i:03d}_ignore.png")
        else:
            loc.append(f"{image_id},{x0},{y0},{x1},{y1}")
            if i % 3 == 0:  # a second box
                loc.append(f"{image_id},0,0,{width // 3},{height // 3}")
    for name, lines in (("image_ids", ids), ("class_labels", labels), ("image_sizes", sizes), ("localization", loc)):
        (meta / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "mymodels.py").write_text(MODEL_SOURCE)
    return {"images": images, "metadata": meta}


def arguments(root: Path, out: Path, metrics="maxboxacc,average_drop,deletion,insertion,road", **extra) -> list[str]:
    args = ["--metadata", str(root / "metadata"), "--images", str(root / "images"), "--model", "mymodels:tiny",
            "--method", "gradcam", "--layer", "2", "--metrics", metrics, "--out", str(out), "--batch-size", "3",
            "--size", "32", "--cam-curve-interval", "0.01", "--road-noise", "0", "--metric-batch-size", "16",
            "--device", "cpu", "--no-progress"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def environment(root: Path) -> dict:
    import camfast

    path = [str(root), str(Path(camfast.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def run(command: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=environment(root), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_one_process_and_torchrun_give_identical_reports(tmp_path):
    write_dataset(tmp_path)
    single = run([sys.executable, "-m", "camfast.evaluate", *arguments(tmp_path, tmp_path / "one")], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "camfast.evaluate", *arguments(tmp_path, tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    for name in ("report.json", "per_image.csv"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["images"] == 11
    assert set(report["metrics"]) >= {"maxboxacc_v2", "maxboxacc_per_iou", "top1_loc", "gt_known_loc",
                                      "average_drop", "increase_in_confidence", "deletion_auc", "insertion_auc",
                                      "road"}
    assert 0 <= report["metrics"]["maxboxacc_v2"] <= 100
    rows = (tmp_path / "one" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 12 and rows[1].startswith("0,birds/000.png,")
    picture = cv2.imread(str(tmp_path / "one" / "overlays.png"))
    assert picture.shape == (32, 8 * 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_masks_give_pxap(tmp_path, monkeypatch, capsys):
    from camfast.evaluate import main

    write_dataset(tmp_path, n=4, masks=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    assert main(arguments(tmp_path, out, "pxap", masks=tmp_path / "masks")) == 0
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["metrics"]["pxap"] <= 100


def _breaks(root: Path, file: str, edit) -> None:
    path = root / "metadata" / file
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


BAD_INPUTS = {
    "missing image": (lambda r: (r / "images" / "birds" / "004.png").unlink(), r"004\.png: image file not found"),
    "id without a box": (lambda r: _breaks(r, "localization.txt", lambda ls: [l for l in ls if "005" not in l]),
                         r"localization\.txt: no localization for image id 'birds/005\.png'"),
    "id without a label": (lambda r: _breaks(r, "class_labels.txt", lambda ls: ls[:-1]),
                           r"class_labels\.txt: no class label for image id 'birds/010\.png'"),
    "box outside its image": (lambda r: _breaks(r, "localization.txt", lambda ls: ls[:1] + ["birds/001.png,0,0,999,5"]
                                                + ls[1:]), r"localization\.txt:2: box \(0, 0, 999, 5\) lies outside"),
    "malformed line": (lambda r: _breaks(r, "image_sizes.txt", lambda ls: ls[:2] + ["birds/002.png,40"] + ls[3:]),
                       r"image_sizes\.txt:3: expected 3 comma-separated fields"),
    "not an integer": (lambda r: _breaks(r, "class_labels.txt", lambda ls: ["birds/000.png,zero"] + ls[1:]),
                       r"class_labels\.txt:1: the class label must be integers"),
    "missing metadata file": (lambda r: (r / "metadata" / "image_sizes.txt").unlink(),
                              r"image_sizes\.txt: file not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_metadata_names_file_and_line_and_writes_nothing(tmp_path, monkeypatch, case):
    from camfast.evaluate import main

    write_dataset(tmp_path, n=11)
    monkeypatch.syspath_prepend(str(tmp_path))
    breaking, message = BAD_INPUTS[case]
    breaking(tmp_path)
    with pytest.raises(SystemExit, match=message):
        main(arguments(tmp_path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing mask", "unreadable image"])
def test_bad_files_name_the_file_and_write_nothing(tmp_path, monkeypatch, case):
    from camfast.evaluate import main

    write_dataset(tmp_path, n=4, masks=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    if case == "missing mask":
        (tmp_path / "masks" / "002.png").unlink()
        message = r"masks/002\.png: mask file not found \(image id 'birds/002\.png'"
    else:
        (tmp_path / "images" / "birds" / "003.png").write_bytes(b"not a png")
        message = r"birds/003\.png: not a readable image"
    with pytest.raises(SystemExit, match=message):
        main(arguments(tmp_path, tmp_path / "out", "pxap", masks=tmp_path / "masks"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("model", "no_such_module:tiny", r"--model: cannot import 'no_such_module'"),
    ("model", "mymodels", r"--model must be MODULE:FUNCTION"),
    ("model", "mymodels:missing", r"--model: 'mymodels' has no callable 'missing'"),
    ("method", "nonesuch", r"--method: unknown 'nonesuch'"),
    ("layer", "9.9", r"--method gradcam --layer 9\.9: target_layer '9\.9' is not a submodule"),
    ("checkpoint", "missing.pt", r"--checkpoint missing\.pt"),
    ("metrics", "pxap", r"--metrics pxap needs masks"),
])
def test_bad_arguments_name_the_argument(tmp_path, monkeypatch, flag, value, message):
    from camfast.evaluate import main

    write_dataset(tmp_path, n=3)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = arguments(tmp_path, tmp_path / "out")
    if f"--{flag}" in args:
        args[args.index(f"--{flag}") + 1] = value
    else:
        args += [f"--{flag}", value]
    with pytest.raises(SystemExit, match=message):
        main(args)
    assert not (tmp_path / "out").exists()
