"""Every compiled kernel against the reference, fast: one PASS/FAIL line per op and backend.

    python -m benchmarks.gpu_smoke [--device cuda|cpu] [--only OP ...] [--jobs N] [--timeout SECONDS]

For each op and each compiled backend usable on the device ("cpp": CUDA on a GPU, C++ on CPU;
"triton": compiled on a GPU, its interpreter on CPU), the forward and (for layers) the backward
are compared with the reference over the op's variants, every dtype the backend computes in, every
layout (contiguous, channels_last, sliced) and a few shapes (odd sizes, 1x1 maps, and on a GPU one
larger shape). Inputs, variants and tolerances are the test suite's own (the op-test template in
tests/), so a PASS here means the same comparison `make test` makes, on fewer shapes.

Each op runs in its own process, in parallel: a kernel that crashes the device or hangs costs its
own line (CRASH or TIMEOUT), not the others'. Exit status 1 unless every line is PASS.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def _check_op(op: str, device: str) -> int:
    """In a child process: one line per backend for `op` on `device`; exit status 1 on a failure."""
    import torch

    if device == "cpu":  # Triton reads this when its kernels are decorated, before camfast loads them
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, str(TESTS))
    from camfast import _backend
    from camfast_testing import checks
    from camfast_testing.op_tester import all_op_testers

    tester = next(t for t in all_op_testers() if t.op == op)
    failed = False
    for backend in ("cpp", "triton"):
        usable, why = _backend.available(backend, torch.device(device))
        if not usable:
            print(f"SKIP  {op:28} {device}-{backend:7} {why}", flush=True)
            continue
        shapes = (*tester.large_shapes, *tester.shapes) if device == "cuda" else tester.shapes_for(backend)
        start, cases, errors = time.perf_counter(), 0, []
        torch.manual_seed(0)
        for dtype in checks.dtypes_for(device, backend):
            for shape in shapes:
                for layout in checks.LAYOUTS:
                    inputs = tester.inputs(shape, dtype, device, layout)
                    for options in tester.options(*inputs):
                        cases += 1
                        try:
                            tester.assert_matches_reference(backend, *inputs, long_sums=tester.long_sums, **options)
                            if device == "cuda":
                                torch.cuda.synchronize()  # an asynchronous kernel fault shows here
                        except Exception as error:  # noqa: BLE001  (one line per op: report, go on)
                            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                            case = f"{str(dtype).removeprefix('torch.')} {'x'.join(map(str, shape))} {layout} {options}"
                            errors.append(f"{case}: {type(error).__name__}: {first[:200]}")
        seconds = time.perf_counter() - start
        status = "FAIL" if errors else "PASS"
        detail = f"; {len(errors)} failed, first: {errors[0]}" if errors else ""
        print(f"{status}  {op:28} {device}-{backend:7} {cases} cases in {seconds:.1f} s{detail}", flush=True)
        failed = failed or bool(errors)
    return 1 if failed else 0


def _run_child(op: str, args) -> tuple[str, bool]:
    """(the child's lines, whether they all passed); CRASH or TIMEOUT when it gave no verdict."""
    command = [sys.executable, "-m", "benchmarks.gpu_smoke", "--op", op, "--device", args.device]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return out + f"TIMEOUT {op:28} {args.device}: no verdict after {args.timeout} s (a hang?)\n", False
    out = run.stdout
    if run.returncode not in (0, 1) or not out.strip():
        tail = " | ".join(run.stderr.strip().splitlines()[-3:])
        out += f"CRASH {op:28} {args.device}: exit status {run.returncode}: {tail[:400]}\n"
        return out, False
    return out, run.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda (default when a GPU is visible) or cpu")
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="ops checked at once")
    parser.add_argument("--timeout", type=int, default=240, help="seconds one op may take")
    parser.add_argument("--only", nargs="*", help="op stems to check (default: every op)")
    parser.add_argument("--op", help=argparse.SUPPRESS)  # the child's own op
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.op:
        return _check_op(args.op, args.device)

    from camfast import reference

    ops = [op for op in reference.__all__ if not args.only or op in args.only]
    start = time.perf_counter()
    print(f"== kernels against the reference on {args.device}: {len(ops)} ops, "
          f"{args.jobs} at a time", flush=True)
    ok = True
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        children = [pool.submit(_run_child, op, args) for op in ops]
        for child in concurrent.futures.as_completed(children):  # each op's lines as soon as it ends
            out, passed = child.result()
            print(out, end="", flush=True)
            ok = ok and passed
    print(f"== {'all passed' if ok else 'FAILURES above'} in {time.perf_counter() - start:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
