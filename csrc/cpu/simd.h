// SIMD helpers for the CPU loops: wider instruction sets picked at load time, an exp and a
// float16 conversion that vectorise.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <torch/headeronly/util/Half.h>

#include "../kernels/common.cuh"

// Compiles a function for AVX-512, AVX2 and the x86-64 baseline (SSE2); the loader picks the best
// the CPU has. Worth it where a loop is compute-bound (exp); memory-bound loops gain nothing.
// GCC on x86-64 Linux only (ifunc); elsewhere the baseline build is used.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CAMFAST_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CAMFAST_SIMD_CLONES
#endif

// Compiles a function for AVX2 with every call inside it inlined (flatten), so that the loops it
// reaches through templates and lambdas vectorise 8 floats (4 doubles) wide; callers pick it at
// run time with has_avx2(). Unlike CAMFAST_SIMD_CLONES (a different `arch`, which stops GCC
// inlining the baseline helpers into the clone), an ISA option lets those helpers inline. No FMA:
// GCC would contract a * b + c, and every product and sum then rounds as in the baseline build.
// CAMFAST_TARGET_AVX2 alone: for functions written with AVX2 intrinsics (built only where
// CAMFAST_HAS_AVX2_BUILD, called only where has_avx2()).
#if defined(__GNUC__) && defined(__x86_64__)
#define CAMFAST_TARGET_AVX2 __attribute__((target("avx2")))
#define CAMFAST_AVX2 CAMFAST_TARGET_AVX2 __attribute__((flatten))
#define CAMFAST_HAS_AVX2_BUILD 1
#else
#define CAMFAST_AVX2
#define CAMFAST_HAS_AVX2_BUILD 0
#endif

namespace camfast::cpu {

// Whether this CPU runs the CAMFAST_AVX2 functions (false where they are not built). The
// environment variable CAMFAST_CPU_CAPABILITY=default keeps the baseline build (as PyTorch's
// ATEN_CPU_CAPABILITY does), so that its loops are tested on CPUs with AVX2 too.
inline bool has_avx2() {
#if CAMFAST_HAS_AVX2_BUILD
  static const bool yes = [] {
    const char* capability = std::getenv("CAMFAST_CPU_CAPABILITY");
    return __builtin_cpu_supports("avx2") && !(capability && std::string_view(capability) == "default");
  }();
  return yes;
#else
  return false;
#endif
}

// exp for loops that must stay SIMD: no library call and no branch, so `#pragma omp simd`
// vectorises it (glibc's vector exp is only declared under -ffast-math, which would break NaN).

// exp(v) for v <= 0 or NaN, within 2 ulp of expf (Cephes range reduction and polynomial).
// Results below the smallest normal float flush to 0; NaN stays NaN.
//
// Selections are bit masks rather than `?:` on floats: GCC may turn those into branches around
// the polynomial, which stops the vectoriser. (__builtin_bit_cast, unlike memcpy, keeps the loop
// free of memory statements.)
inline float exp_nonpositive(float v) {
  constexpr float kLow = -87.33654f;     // log(2^-126)
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const uint32_t low = 0u - uint32_t(v < kLow);  // all ones below kLow (and at -inf), else 0
  const float c = __builtin_bit_cast(float, (__builtin_bit_cast(uint32_t, v) & ~low) |
                                                (__builtin_bit_cast(uint32_t, kLow) & low));
  const float t = c * 1.44269504088896341f + kRound;
  const float n = t - kRound;  // round(c / ln 2)
  const float r = (c - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 split: n * hi is exact
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n built in the exponent field; t's low mantissa bits hold n (unsigned: NaN wraps harmlessly).
  const uint32_t n_bits = __builtin_bit_cast(uint32_t, t) - __builtin_bit_cast(uint32_t, kRound);
  const float scale = __builtin_bit_cast(float, (n_bits + 127u) << 23);
  return __builtin_bit_cast(float, __builtin_bit_cast(uint32_t, p * scale) & ~low);
}

inline double exp_nonpositive(double v) { return std::exp(v); }

// v in its accumulation type (acc_t), in a form loops vectorise. c10::Half's own conversion goes
// through memcpy, which kept float16 loops scalar on the x86-64 baseline (no F16C): 10-16x slower
// than float32 (benchmarks/NOTES.md, "Float terms, double totals"). Same algorithm (the FP16
// library's fp16_ieee_to_fp32_value), with bit casts and a mask for its select.
template <class T> inline acc_t<T> widen(T v) { return acc_t<T>(v); }
inline float widen(torch::headeronly::Half v) {
  const uint32_t w = uint32_t(v.x) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;  // exponent and mantissa at the top
  // Normal numbers, inf and NaN: rebias the exponent by 0xE0, then scale by 2^-112.
  const float normal = __builtin_bit_cast(float, (two_w >> 4) + (0xE0u << 23)) * __builtin_bit_cast(float, 15u << 23);
  // Subnormals: the mantissa as the low bits of 0.5's, minus 0.5.
  const float subnormal = __builtin_bit_cast(float, (two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t is_subnormal = 0u - uint32_t(two_w < (1u << 27));
  return __builtin_bit_cast(float, sign | (__builtin_bit_cast(uint32_t, subnormal) & is_subnormal) |
                                       (__builtin_bit_cast(uint32_t, normal) & ~is_subnormal));
}

}  // namespace camfast::cpu
