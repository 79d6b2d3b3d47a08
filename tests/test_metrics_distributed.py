"""Two CPU processes (torch.distributed, gloo, started by torchrun) give exactly the one-process
results for every stateful evaluator: the WSOL evaluators and the faithfulness metrics."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is None or
                                importlib.util.find_spec("cv2") is None, reason="needs torchmetrics and OpenCV")


def test_two_processes_give_the_single_process_results(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        from distributed_metrics_worker import evaluate
    finally:
        sys.path.remove(str(HERE))
    out = tmp_path / "two.json"
    import camfast  # the workers import the camfast this test imports

    path = os.pathsep.join([str(Path(camfast.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(HERE / "distributed_metrics_worker.py"), str(out)],
                         env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    single = json.loads(json.dumps(evaluate()))  # the same JSON round trip as the workers'
    assert json.loads(out.read_text()) == single
