"""Timing, peak memory and the Case type shared by every benchmark module.

CPU timings use torch.utils.benchmark with all of torch's threads (its Timer defaults to one);
CUDA timings use triton.testing.do_bench. Providers of one case are timed in alternating rounds so
that machine drift hits them alike, and only ratios from the same run are reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
from collections.abc import Callable, Sequence

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.benchmark import Timer


@dataclasses.dataclass
class Case:
    """One measurement point: several providers computing the same thing."""

    op: str
    mode: str  # forward | backward | full (layers); explain (explainers); ...
    shape: str
    dtype: str
    providers: dict[str, Callable[[], object]]
    # Bytes the op must move at the least (inputs read once, outputs written once); gives GB/s.
    floor_bytes: int | None = None
    # Timing rounds for this case (None: the run's); 1 for cases whose providers take minutes.
    rounds: int | None = None


@dataclasses.dataclass
class Timing:
    p20_ms: float
    p50_ms: float
    p80_ms: float


def _quantiles(samples: Sequence[float]) -> Timing:
    q = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else [samples[0]] * 9
    return Timing(q[1] * 1e3, statistics.median(samples) * 1e3, q[7] * 1e3)


def _cpu_samples(fn: Callable[[], object], seconds: float) -> list[float]:
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return list(timer.blocked_autorange(min_run_time=seconds).times)


def _cuda_samples(fn: Callable[[], object], seconds: float) -> list[float]:
    from triton.testing import do_bench

    ms = do_bench(fn, warmup=max(5.0, 250 * seconds), rep=max(20.0, 1000 * seconds), return_mode="all")
    return [t / 1e3 for t in ms]


def time_providers(case: Case, device: torch.device, rounds: int, seconds: float) -> dict[str, Timing]:
    """Interleaved timing: each round times every provider for `seconds` / `rounds`."""
    sample = _cuda_samples if device.type == "cuda" else _cpu_samples
    samples: dict[str, list[float]] = {name: [] for name in case.providers}
    for fn in case.providers.values():  # warm-up: first calls compile, allocate, fault pages in
        fn()
    for _ in range(rounds):
        for name, fn in case.providers.items():
            samples[name] += sample(fn, seconds / rounds)
    return {name: _quantiles(s) for name, s in samples.items()}


@contextlib.contextmanager
def _native_stderr_silenced():
    """The profiler's native library logs each start/stop straight to fd 2."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of live CPU tensor memory during one call, from the profiler's allocation events.

    Allocations are attributed to top-level ops and frees to top-level memory events, in time
    order; a transient buffer allocated and freed inside a single op is not seen.
    """
    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    top = sorted((e for e in prof.events() if e.cpu_parent is None), key=lambda e: e.time_range.start)
    level = peak = 0
    for event in top:
        level += event.cpu_memory_usage
        peak = max(peak, level)
    return peak


def _cuda_peak_bytes(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    peak = _cuda_peak_bytes(fn) if device.type == "cuda" else _cpu_peak_bytes(fn)
    return peak / 2**20
