"""camfast.cam against the real peer libraries (grad-cam 1.5.7, torchcam 0.5.0, captum 0.9.0).

Runs where they are installed (`make bench` builds that environment; in it run
`python -m pytest tests/test_cam_peers.py`) and is skipped elsewhere. The pairs and the comparison
live in benchmarks/cam_peer_check.py, which prints the same table.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
MISSING = [m for m in ("pytorch_grad_cam", "torchcam", "captum") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"peer libraries not installed: {MISSING}"),
    pytest.mark.skipif(not (ROOT / "benchmarks").is_dir(), reason="tests run outside the source tree"),
]
if (ROOT / "benchmarks").is_dir():
    from benchmarks import cam_peer_check
    from benchmarks.cam_models import BenchNet


def test_every_preset_matches_its_peer():
    torch.manual_seed(0)
    model = BenchNet(widths=(8, 8, 16, 32), expand=64, classes=20)
    x = torch.rand(2, 3, 64, 64)
    rows = cam_peer_check.compare(model, "layer4", "expand", "fc", x, torch.tensor([3, 11]))
    assert len(rows) == 9
    low = [r for r in rows if r["corr"] < cam_peer_check.THRESHOLD]
    assert not low, low
