// Torch-free building blocks shared by the CPU loops and the CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define CAMFAST_HD __host__ __device__ __forceinline__
#else
#define CAMFAST_HD inline
#endif

namespace camfast {

// Accumulation type: float for float/half/bfloat16 inputs, double for double.
template <class T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <class T> using acc_t = typename AccType<T>::type;

// Running totals, for every input type: a float sum of n terms drifts by up to n ulps (7.7e-3 of
// a TAP mean over an 8192 x 8192 map), where eager's pairwise sums stay near one. In double the
// drift stays far below float's rounding, so an output that is one sum is rounded about once.
// The CPU loops sum short float blocks and add the block sums in double (cpu/loops.h); CUDA's
// per-thread partials and their warp and block trees are double throughout (benchmarks/NOTES.md,
// "Exact sums").
using sum_t = double;

template <class A> CAMFAST_HD A quiet_nan() { return std::numeric_limits<A>::quiet_NaN(); }
template <class A> CAMFAST_HD A lowest() { return -std::numeric_limits<A>::infinity(); }

// Running maximum with torch.amax semantics: any NaN makes the result NaN. CUDA's fmaxf and
// std::max both drop NaN, so the NaN is tracked beside a plain `>` maximum, which vectorises.
template <class A> struct NanMax {
  A value = lowest<A>();
  bool has_nan = false;

  CAMFAST_HD void add(A v) {
    has_nan |= (v != v);
    value = v > value ? v : value;
  }
  CAMFAST_HD void merge(const NanMax& o) {
    has_nan |= o.has_nan;
    value = o.value > value ? o.value : value;
  }
  CAMFAST_HD A result() const { return has_nan ? quiet_nan<A>() : value; }
};

CAMFAST_HD float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
CAMFAST_HD double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

}  // namespace camfast
