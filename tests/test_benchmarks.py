"""The benchmark command stays runnable: a quick run of one op writes rows, a plot and a table."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks").is_dir(), reason="tests run outside the source tree")


def test_quick_benchmark_run_writes_rows_and_plot(tmp_path):
    out = tmp_path / "rows.csv"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--seconds", "0.02", "--only", "thresholded_avg_pool2d",
         "--device", "cpu", "--csv", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(out.open()))
    assert {r["provider"] for r in rows} >= {"reference", "cpp"}
    assert {r["mode"] for r in rows} == {"forward", "backward", "full"}
    assert all(float(r["p50_ms"]) > 0 for r in rows)
    # Each mode allocates at least its result: the pooled [N, C] forward, the gradient of x
    # backward. The CSV rounds to 4 significant digits.
    for r in rows:
        n, c, h, w = map(int, r["shape"].split("x"))
        size = torch.finfo(getattr(torch, r["dtype"])).bits // 8
        result = n * c * size * (1 if r["mode"] == "forward" else h * w)
        assert float(r["peak_mb"]) >= result / 2**20 * (1 - 1e-3), r
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| thresholded_avg_pool2d | forward |" in run.stdout
