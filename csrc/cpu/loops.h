// Parallel loop shapes shared by the CPU kernels.
#pragma once

#include <algorithm>
#include <cstdint>

#include <torch/csrc/stable/ops.h>

#include "../common/layout.h"

namespace camfast::cpu {

// Channels handled together when channels are the innermost axis: 64 accumulators of each kind
// stay in registers/L1 and a block of 64 x H*W values stays in L2 between the passes.
constexpr int64_t kChannelBlock = 64;

// Enough elements per task that the thread pool's overhead is noise.
constexpr int64_t kGrainElements = 1 << 15;

// Sums. A float running sum of n terms drifts by up to n ulps, and double accumulators slow the
// compute-bound loops (1.1-1.7x; 7x in TAP, where the widened select stops GCC vectorising:
// benchmarks/NOTES.md, "Exact sums"). So sums run in float blocks whose totals are added in double
// (sum_t): the error no longer grows with the length of the sum, and the loops keep their speed.
// A loop with one sum calls lane_sum; loops with several (TAP's sum and count, soft-argmax's
// three) are written out: behind a lambda, GCC kept TAP's counts in memory (1.5x slower).
//
// Terms one float accumulator adds per block, where each accumulator is a channel (or pixel).
constexpr int64_t kSumChain = 64;
// Terms per block of a vectorised reduction with one sum (lane_sum, planes.h): no float chain is
// longer than 256 terms whatever the compiler does, 64 per lane at SSE2's 4 float lanes. The
// bound must not rest on vectorisation: unvectorised (-O1, the sanitizer build), blocks of 1024
// took float32 Grad-CAM weights, a sum of gradients that cancel, past twice eager's error.
constexpr int64_t kLaneSumBlock = 4 * kSumChain;
// Terms per block of the sums of non-negative terms or weighted by them (the softmax's exps, TAP's
// kept values, soft-argmax's three sums): a chain of 1024 unvectorised stays within the bound for
// them, and blocks of 256 cost these loops 1.05-1.2x (loop entry and exit per block).
constexpr int64_t kWideSumBlock = 16 * kSumChain;

// sum over p in [0, P) of term(p), one vectorised reduction in float blocks of kBlock added in
// double. term may also store (the softmax rows keep each exp for their next pass).
template <class A, int64_t kBlock = kLaneSumBlock, class F> inline sum_t lane_sum(int64_t P, const F& term) {
  sum_t sum = 0;
  for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
    const int64_t p1 = std::min(P, p0 + kBlock);
    A part = A(0);
#pragma omp simd reduction(+ : part)
    for (int64_t p = p0; p < p1; ++p) part += term(p);
    sum += part;
  }
  return sum;
}

// Strided access with the unit stride known at compile time, so the contiguous case vectorises.
template <bool kUnit> struct Stride {
  int64_t s;
  int64_t operator()(int64_t i) const { return kUnit ? i : i * s; }
};

// body(Stride...) over the given strides: all Stride<true> when every stride is 1 (the contiguous
// rows the compiler vectorises), else all Stride<false>.
template <class F, class... S> void with_strides(const F& body, S... strides) {
  if (((strides == 1) && ...)) {
    body(Stride<true>{strides}...);
  } else {
    body(Stride<false>{strides}...);
  }
}

// body(n, c) for every (n, c) row, rows split across threads.
template <class F> void parallel_rows(const NCP& v, const F& body) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, v.P));
  torch::stable::parallel_for(0, v.N * v.C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r / v.C, r % v.C);
  });
}

// body(n, c0, c1) for every block of at most kChannelBlock channels of every sample.
template <class F> void parallel_channel_blocks(const NCP& v, const F& body) {
  const int64_t blocks = (v.C + kChannelBlock - 1) / kChannelBlock;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, v.P * kChannelBlock));
  torch::stable::parallel_for(0, v.N * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks;
      const int64_t c0 = (task % blocks) * kChannelBlock;
      body(n, c0, std::min(v.C, c0 + kChannelBlock));
    }
  });
}

// body(n, p0, p1) for every block of pixels of every sample (per-pixel work over channels).
// Blocks of small maps are grouped into tasks of kGrainElements: a call on a few small maps then
// runs on the calling thread instead of waking the pool (which, on a loaded machine, can wait
// a scheduler time slice for a descheduled worker).
template <class F> void parallel_pixel_blocks(const NCP& v, int64_t pixels_per_task, const F& body) {
  const int64_t blocks = (v.P + pixels_per_task - 1) / pixels_per_task;
  const int64_t block_elements = std::max<int64_t>(1, v.C * std::min(v.P, pixels_per_task));
  const int64_t grain = std::max<int64_t>(1, kGrainElements / block_elements);
  torch::stable::parallel_for(0, v.N * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks;
      const int64_t p0 = (task % blocks) * pixels_per_task;
      body(n, p0, std::min(v.P, p0 + pixels_per_task));
    }
  });
}

}  // namespace camfast::cpu
