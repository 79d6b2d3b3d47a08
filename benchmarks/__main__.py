"""Run the benchmark suite: `python -m benchmarks [--quick] [--only STEM ...] [--device cpu|cuda] [--out DIR]`.

Rows go to DIR/<device>.csv as each case finishes (so a run stopped part-way keeps what it
measured), then a plot (DIR/<device>.png) and the table (DIR/<device>.md). DIR defaults to
bench-results/ (bench-results/quick/ with --quick), which git ignores; `make bench-publish`
copies results into the committed tables.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import torch

from . import harness, results


def _modules(only: list[str] | None):
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if only:
        names = [n for n in names if n.removeprefix("bench_") in only]
    return [importlib.import_module(f"{__package__}.{n}") for n in names]


def _rows(case: harness.Case, timings, peaks, env) -> list[dict[str, str]]:
    reference = timings.get("reference")
    rows = []
    for provider, t in timings.items():
        rows.append({
            **env,
            "op": case.op, "mode": case.mode, "shape": case.shape, "dtype": case.dtype, "provider": provider,
            "first_ms": f"{t.first_ms:.5g}", "p50_ms": f"{t.p50_ms:.5g}", "p90_ms": f"{t.p90_ms:.5g}",
            "p99_ms": f"{t.p99_ms:.5g}", "calls": str(t.calls),
            "speedup_vs_reference": f"{reference.p50_ms / t.p50_ms:.4g}" if reference else "",
            "gbps": f"{case.floor_bytes / t.p50_ms / 1e6:.4g}" if case.floor_bytes else "",
            "peak_mb": f"{peaks[provider]:.4g}",
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes, short timings (smoke run)")
    parser.add_argument("--only", nargs="*", help="op stems to run, e.g. thresholded_avg_pool2d")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=None, help="timing budget per provider per case")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the CSV, plot and table (default: bench-results/, or bench-results/quick/)")
    parser.add_argument("--csv", type=Path, default=None, help="the CSV file itself (default: OUT/<device>.csv)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    seconds = args.seconds or (0.2 if args.quick else 1.0)
    min_calls = 1 if args.quick else 10
    env = results.environment(device)
    print(f"camfast benchmarks on {env['device']} ({env['threads']} threads), torch {env['torch']}", flush=True)
    out = args.out or results.out_dir(args.quick)
    path = args.csv or out / results.csv_name(device)
    new_rows = []
    for module in _modules(args.only):
        for case in module.cases(device, args.quick):
            timings = harness.time_providers(case, device, case.min_calls or min_calls, seconds)
            peaks = {p: harness.peak_memory_mb(fn, device) for p, fn in case.providers.items()}
            rows = _rows(case, timings, peaks, env)
            new_rows += rows
            all_rows = results.upsert_rows(path, rows)
            summary = ", ".join(f"{r['provider']} {r['p50_ms']} ms (first {r['first_ms']}, p99 {r['p99_ms']})"
                                for r in rows)
            print(f"  {case.op} {case.mode} {case.shape} {case.dtype}: {summary}", flush=True)
    if not new_rows:
        print("no cases ran")
        return 1
    results.plot(all_rows, path.with_suffix(".png"))
    table = results.markdown_table(new_rows)
    path.with_suffix(".md").write_text(table + "\n")
    print(f"\n{table}\n")
    slower = results.slower_than_reference(new_rows)
    print("first call or p99 slower than the eager reference:" if slower else
          "every first call and p99 within the eager reference's", *slower, sep="\n  ")
    print(f"\nrows: {path}\nplot: {path.with_suffix('.png')}\ntable: {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
