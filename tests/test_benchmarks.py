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
    for r in rows:  # first call, median and tail of every provider
        assert float(r["first_ms"]) > 0 and int(r["calls"]) >= 1, r
        assert 0 < float(r["p50_ms"]) <= float(r["p90_ms"]) <= float(r["p99_ms"]), r
    # Each mode allocates at least its result: the pooled [N, C] forward, the gradient of x
    # backward. The CSV rounds to 4 significant digits.
    for r in rows:
        n, c, h, w = map(int, r["shape"].split("x"))
        size = torch.finfo(getattr(torch, r["dtype"])).bits // 8
        result = n * c * size * (1 if r["mode"] == "forward" else h * w)
        assert float(r["peak_mb"]) >= result / 2**20 * (1 - 1e-3), r
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| thresholded_avg_pool2d | forward |" in run.stdout
    assert "cpp first / p90 / p99 ms" in run.stdout


def test_providers_are_interleaved_call_by_call():
    """A, B, then B, A, ...: each provider's first call apart, then rounds in alternating order
    until both have run the budget and the minimum number of calls."""
    from benchmarks import harness

    calls = []
    case = harness.Case("op", "forward", "1", "float32",
                        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")})
    timings = harness.time_providers(case, torch.device("cpu"), min_calls=3, seconds=0.0)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert timings["a"].calls == timings["b"].calls == 3
    assert all(t.first_ms > 0 and t.p50_ms <= t.p90_ms <= t.p99_ms for t in timings.values())


def test_gpu_smoke_runs_and_passes_on_cpu():
    """The GPU check's first stage runs here too (C++ kernels, Triton under its interpreter)."""
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_smoke", "--device", "cpu", "--only",
                          "attention_branch_mix"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIP", "CRASH"))]
    assert [line.split()[:3] for line in lines] == [["PASS", "attention_branch_mix", "cpu-cpp"],
                                                    ["PASS", "attention_branch_mix", "cpu-triton"]], run.stdout


def test_publishing_keeps_rows_of_the_older_harness(tmp_path):
    """Published rows from before the harness timed single calls (p20/p80, no first call) keep
    every value when new rows are merged in, and tables of only such rows keep their columns."""
    from benchmarks import results

    env = dict(device="cpu", threads="2", torch="2", triton="3", camfast="0", git_sha="abc", timestamp="t",
               speedup_vs_reference="", gbps="", peak_mb="1")
    old = [dict(env, op="adl", mode="forward", shape="1", dtype="float32", provider=p, p20_ms="1.5",
                p50_ms=ms, p80_ms="2.5") for p, ms in (("reference", "2"), ("cpp", "1"))]
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(old[0]))
        writer.writeheader()
        writer.writerows(old)
    assert "first / p90 / p99" not in results.markdown_table(results.read_rows(path))
    new = dict(env, op="adl", mode="backward", shape="1", dtype="float32", provider="cpp", first_ms="9",
               p50_ms="1", p90_ms="2", p99_ms="3", calls="10")
    results.upsert_rows(path, [new])
    rows = results.read_rows(path)
    by_mode = {r["mode"]: r for r in rows if r["provider"] == "cpp"}
    assert {k: by_mode["forward"][k] for k in old[1]} == old[1] and by_mode["forward"]["first_ms"] == ""
    assert {k: by_mode["backward"][k] for k in new} == new
    assert "| adl | forward | 1 | float32 | 2 | 1 | - / - / - | - / - / - |" in results.markdown_table(rows)
