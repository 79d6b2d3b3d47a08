"""Timing, peak memory and the Case type shared by every benchmark module.

Every call is timed on its own, providers interleaved call by call (A, B, then B, A, ...), so
machine drift and the bursts of other jobs hit them alike and one provider's allocations age the
heap the other sees; only ratios from the same run are reported. Each provider's first call in a
case is reported apart (it pays one-time costs: lazy initialisation, dispatch caches, and the page
faults of memory no call has touched before); the median and the 90th and 99th percentiles come
from the calls after it. CPU calls are timed with time.perf_counter, CUDA calls between two
device synchronisations (their latency, launch included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch.profiler import ProfilerActivity, profile


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
    # Timed calls per provider at the least, after the first (None: the run's); 1 for cases whose
    # providers take minutes.
    min_calls: int | None = None


@dataclasses.dataclass
class Timing:
    first_ms: float  # the first call (see the module docstring)
    p50_ms: float
    p90_ms: float
    p99_ms: float  # the largest call when there are fewer than 100
    calls: int  # timed calls after the first


# Enough calls of a microsecond op for stable quantiles, and no more.
MAX_CALLS = 10_000


def _timing(first: float, samples: Sequence[float]) -> Timing:
    ms = sorted(t * 1e3 for t in samples)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return Timing(first * 1e3, statistics.median(ms), cuts[89], cuts[98], len(ms))


def _clock(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Seconds one call of fn takes on device."""
    if device.type != "cuda":
        def cpu(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        return cpu

    def cuda(fn):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return cuda


def time_providers(case: Case, device: torch.device, min_calls: int, seconds: float) -> dict[str, Timing]:
    """Per-call times of every provider, interleaved call by call, the order reversed every round.

    After each provider's first call, rounds continue until every provider has run `seconds` and
    `min_calls` times (at most MAX_CALLS).
    """
    clock = _clock(device)
    names = list(case.providers)
    first = {name: clock(case.providers[name]) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)
    order = names
    for calls in range(MAX_CALLS):
        if calls >= min_calls and min(spent.values()) >= seconds:
            break
        for name in order:
            samples[name].append(clock(case.providers[name]))
            spent[name] += samples[name][-1]
        order = order[::-1]
    return {name: _timing(first[name], samples[name]) for name in names}


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
    order; a transient buffer allocated and freed inside a single op is not seen, nor is a camfast
    output of 32 MB or more served from its pool of freed outputs (csrc/common/memory.h).
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
