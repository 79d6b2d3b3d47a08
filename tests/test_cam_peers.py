"""camfast.cam against the real peer libraries (grad-cam 1.5.7, torchcam 0.5.0, captum 0.9.0).

The test environment installs them (`make test`, as the benchmark environment does); a missing
peer fails these tests rather than skipping them. The pairs (each camfast explainer with the
preset that reproduces a peer's method) and the comparison live in benchmarks/cam_peer_check.py,
which prints the same table. Every pair must reach a per-image correlation of 0.99999 and a
largest difference of 1e-5 after the peer's map is resized to the input and min-maxed, on two
architectures (a GAP + FC CNN with a smooth activation, and a residual net with BatchNorm and
in-place ReLU), for one layer, several layers, and several classes per image in one call;
FullyCAM on the layers and on every conv against both peers' multi-layer LayerCAM.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from camfast_testing.cam_models import PlainNet, resnet

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks").is_dir(), reason="tests run outside the source tree")

# (model factory, one layer, several layers of different sizes, the layer that feeds GAP -> fc)
ARCHS = {"plain": (lambda: PlainNet(activation=nn.GELU), ["features.4"], ["features.1", "features.4", "features.7"],
                   "features.7"),
         "resnet": (resnet, ["layer3"], ["layer2", "layer3", "layer4"], "expand")}
CASES = {"one-layer": (1, torch.tensor([3, 11, 7])), "several-layers": (3, torch.tensor([3, 11, 7])),
         "several-classes": (3, torch.tensor([[3, 5], [11, 0], [7, 7]]))}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: on a loaded machine, torch's worker threads cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def peer_check():
    from benchmarks import cam_peer_check, peers

    missing = [p for p in peers.MODULES if not peers.available(p)]
    if missing:
        pytest.fail(f"the peer libraries must be installed for these tests (make test installs them): {missing}")
    return cam_peer_check


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_method_and_preset_matches_its_peer(peer_check, arch, case):
    torch.manual_seed(0)
    make, one, several, cam_layer = ARCHS[arch]
    count, targets = CASES[case]
    layers = one if count == 1 else several
    rows = peer_check.compare(make(), layers, torch.rand(3, 3, 64, 64), targets, cam_layer, "fc")
    methods = {r["method"] for r in rows}
    assert {"LayerCAM[grad-cam]", "LayerCAM[torchcam]", "XGradCAM[torchcam]", "FinerCAM[torchcam]", "FEM"} <= methods
    assert ("ShapleyCAM (ReST)" in methods) == ("CAM" in methods) == (count == 1)
    assert ("FullyCAM every conv (max, tanh)" in methods) == ("FullyCAM (mean)" in methods) == (count > 1)
    bad = [r for r in rows if not peer_check.agrees(r)]
    assert not bad, bad

