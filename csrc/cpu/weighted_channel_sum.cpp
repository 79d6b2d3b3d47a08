// The gradient CAM methods' raw map on the CPU, NCHW and channels_last in place.
//
// Weighted methods first: per image (class t, sample n), each channel's spatial sums and its
// weight, one task per image. Then every method: per sample and block of pixels, the channel
// sums of every class and the ReLU. A channel's map (P values) stays in L1 between the passes of
// the first step, and a block of A in cache across the classes of the second. Each step is
// compiled twice, for the baseline and for AVX2 (CAMFAST_AVX2: every helper inlined into it), and
// runs the AVX2 build where the CPU has it; with float32 NCHW maps, two loops are written with
// AVX2 intrinsics there (short rows' sums, several classes' maps). benchmarks/NOTES.md, "AVX2
// at run time".
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/weighted_channel_sum.cuh"
#include "../ops/weighted_channel_sum.h"
#include "loops.h"
#include "planes.h"
#include "simd.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cpu::Unit;
using weighted_channel_sum::Method;

// Terms (products, alphas, ReLUs) in acc_t, float for float32, float16 and bfloat16 as eager
// PyTorch evaluates them, summed in float blocks into double totals (sum_t; planes.h). Each term
// is then rounded as eager rounds it, and the totals drift less than eager's float sums. Terms in
// double cost up to 2x in these loops (half the lanes; benchmarks/NOTES.md, "Float terms, double
// totals").
//
// Except for float32's weighted maps: their weights and the products w A run in double (exact_t).
// Rounded to float, as eager rounds them, the map of a small map that cancels (three products of
// 1e-3 summing to 1e-5) differs from eager's by other roundings than eager's own, at up to 5x
// eager's error against float64. float16 and bfloat16 round their inputs far more coarsely.
template <class T> using exact_t = std::conditional_t<std::is_same_v<T, float>, sum_t, acc_t<T>>;
using cpu::kChannelBlock;
using cpu::widen;

template <class T, Unit U> cpu::Plane<const T, U> plane(const T* base, const NCP& v) {
  return {base, v.stride_c, v.stride_p};
}

// sum[c] += sum_p x[c * stride + p] over the P pixels of C float rows, each row's block sum in
// float (P <= kLaneSumBlock, as add_pixel_sums) added into double. For NCHW maps of a few dozen
// pixels, where add_pixel_sums's `omp simd` reduction spends most of each row ending itself (one
// vector of lanes, reduced one lane at a time through memory): here 8 rows at a time, each in its
// own vector, reduced together by a transposing tree of horizontal adds. Only where has_avx2().
#if CAMFAST_HAS_AVX2_BUILD
CAMFAST_TARGET_AVX2 void add_short_row_sums_avx2(const float* x, int64_t stride, int64_t C, int64_t P, sum_t* sum) {
  int32_t tail_lanes[8];
  for (int l = 0; l < 8; ++l) tail_lanes[l] = l < P % 8 ? -1 : 0;
  const __m256i tail = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tail_lanes));
  const int64_t body = P - P % 8;
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 row[8];
    for (int j = 0; j < 8; ++j) {
      const float* r = x + (c + j) * stride;
      __m256 acc = _mm256_maskload_ps(r + body, tail);
      for (int64_t p = 0; p < body; p += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(r + p));
      row[j] = acc;
    }
    const __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(row[0], row[1]), _mm256_hadd_ps(row[2], row[3]));
    const __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(row[4], row[5]), _mm256_hadd_ps(row[6], row[7]));
    // h0 holds rows 0-3's sums over their low four lanes, then over their high four; h1 rows 4-7's.
    const __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
    const __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(sums));
    const __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(sums, 1));
    _mm256_storeu_pd(sum + c, _mm256_add_pd(_mm256_loadu_pd(sum + c), low));
    _mm256_storeu_pd(sum + c + 4, _mm256_add_pd(_mm256_loadu_pd(sum + c + 4), high));
  }
  for (; c < C; ++c) {
    float part = 0;
    for (int64_t p = 0; p < P; ++p) part += x[c * stride + p];
    sum[c] += part;
  }
}
#endif

// sum[c] += sum_p x(c, p) over the pixels of a plane of maps (add_pixel_sums); v gives the sizes,
// x its own strides (act's and grad's channel strides may differ).
template <class T, Unit U> void add_map_sums(const NCP& v, const cpu::Plane<const T, U>& x, sum_t* sum) {
#if CAMFAST_HAS_AVX2_BUILD
  if constexpr (std::is_same_v<T, float> && U == Unit::pixel) {
    if (v.P <= cpu::kLaneSumBlock && cpu::has_avx2()) return add_short_row_sums_avx2(x.base, x.stride_c, v.C, v.P, sum);
  }
#endif
  cpu::add_pixel_sums<U>(v, 0, v.P, sum, [&](int64_t c, int64_t p) { return widen(x(c, p)); });
}

// Per-task scratch of the weights pass: three totals per channel, and the first as a term.
template <class A> struct WeightScratch {
  std::vector<sum_t> s, num, den;
  std::vector<A> s_term;
  explicit WeightScratch(int64_t C) : s(C), num(C), den(C), s_term(C) {}
};

// w[c]: the weights of image i's C channels, from their spatial sums (a channel's rows stay in
// cache between the sums). Computed in double from the totals, then rounded to a term.
template <Method M, class T, Unit U>
void image_weights(const weighted_channel_sum::IO& io, int64_t i, sum_t eps, WeightScratch<acc_t<T>>& t,
                   exact_t<T>* w) {
  using A = acc_t<T>;
  const NCP& v = io.a;
  const auto a = plane<T, U>(io.act.const_data_ptr<T>() + io.act_offset(i), io.a);
  const auto g = plane<T, U>(io.grad.const_data_ptr<T>() + io.grad_offset(i), io.g);
  for (auto* sums : {&t.s, &t.num, &t.den}) std::fill(sums->begin(), sums->end(), sum_t(0));
  const A* s = t.s_term.data();
  if constexpr (weighted_channel_sum::needs_s(M)) {
    add_map_sums<T, U>(v, a, t.s.data());
    std::copy(t.s.begin(), t.s.end(), t.s_term.begin());
  }
  // XGrad-CAM's numerator is a sum of products g A: exact_t, like the map's products.
  using Num = std::conditional_t<M == Method::xgrad_cam, exact_t<T>, A>;
  if constexpr (M == Method::grad_cam) {
    add_map_sums<T, U>(v, g, t.num.data());  // numerator<grad_cam>(g, ...) = g
  } else {
    cpu::add_pixel_sums<U>(v, 0, v.P, t.num.data(), [&](int64_t c, int64_t p) {
      return weighted_channel_sum::numerator<M>(Num(widen(g(c, p))), Num(widen(a(c, p))), Num(s[c]));
    });
  }
  if constexpr (weighted_channel_sum::needs_den(M)) {
    cpu::add_pixel_sums<U>(v, 0, v.P, t.den.data(), [&](int64_t c, int64_t p) {
      return weighted_channel_sum::denominator<M>(widen(g(c, p)), widen(a(c, p)), s[c]);
    });
  }
  for (int64_t c = 0; c < v.C; ++c) w[c] = exact_t<T>(weighted_channel_sum::weight<M>(t.num[c], t.den[c], v.P, eps));
}

// sum[t * len + k] += sum_c w[t * w_class + c] a[c * stride + k] for the T classes of one sample,
// its C channels and len pixels: float maps, double weights and sums. The classes' maps of one
// block of A, four classes and 8 pixels at a time in 8 vectors of sums: each value of A is loaded
// and converted to double once per four classes instead of once per class, and the sums stay in
// registers over the channels. The products and sums are those of add_channel_sums, in its
// order (no FMA), so the maps equal those of one class at a time. Only where has_avx2().
#if CAMFAST_HAS_AVX2_BUILD
// The classes [t0, t0 + kClasses), a compile-time count so that their sums stay in registers.
template <int64_t kClasses>
CAMFAST_TARGET_AVX2 void add_class_tile_avx2(const float* a, int64_t stride, int64_t C, int64_t len,
                                                const sum_t* w, int64_t w_class, sum_t* sum) {
  const int64_t body = len - len % 8;
  for (int64_t k = 0; k < body; k += 8) {
    __m256d lo[kClasses], hi[kClasses];
    for (int64_t j = 0; j < kClasses; ++j) {
      lo[j] = _mm256_loadu_pd(sum + j * len + k);
      hi[j] = _mm256_loadu_pd(sum + j * len + k + 4);
    }
    for (int64_t c = 0; c < C; ++c) {
      const __m256d a_lo = _mm256_cvtps_pd(_mm_loadu_ps(a + c * stride + k));
      const __m256d a_hi = _mm256_cvtps_pd(_mm_loadu_ps(a + c * stride + k + 4));
      for (int64_t j = 0; j < kClasses; ++j) {
        const __m256d wj = _mm256_broadcast_sd(w + j * w_class + c);
        lo[j] = _mm256_add_pd(lo[j], _mm256_mul_pd(wj, a_lo));
        hi[j] = _mm256_add_pd(hi[j], _mm256_mul_pd(wj, a_hi));
      }
    }
    for (int64_t j = 0; j < kClasses; ++j) {
      _mm256_storeu_pd(sum + j * len + k, lo[j]);
      _mm256_storeu_pd(sum + j * len + k + 4, hi[j]);
    }
  }
  for (int64_t j = 0; j < kClasses; ++j) {
    for (int64_t k = body; k < len; ++k) {
      sum_t total = sum[j * len + k];
      for (int64_t c = 0; c < C; ++c) total = total + w[j * w_class + c] * sum_t(a[c * stride + k]);
      sum[j * len + k] = total;
    }
  }
}

CAMFAST_TARGET_AVX2 void add_class_maps_avx2(const float* a, int64_t stride, int64_t C, int64_t len,
                                               const sum_t* w, int64_t w_class, int64_t T, sum_t* sum) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) add_class_tile_avx2<4>(a, stride, C, len, w + t * w_class, w_class, sum + t * len);
  for (; t < T; ++t) add_class_tile_avx2<1>(a, stride, C, len, w + t * w_class, w_class, sum + t * len);
}
#endif

// out[t, n, p] for every class t and the pixels [p0, p1) of sample n: per block of channels, the
// channel sums of each class added into its row of sum (the block of A stays in cache across the
// classes), then the ReLU.
template <Method M, class T, Unit U>
void map_block(const weighted_channel_sum::IO& io, int64_t n, int64_t p0, int64_t p1, const exact_t<T>* w,
               sum_t* sum) {
  const int64_t len = p1 - p0, N = io.a.N, C = io.a.C;
  std::fill(sum, sum + io.T * len, sum_t(0));
  for (int64_t c0 = 0; c0 < C; c0 += kChannelBlock) {
    NCP block = io.a;
    block.C = std::min(C, c0 + kChannelBlock) - c0;
    const auto a = plane<T, U>(io.act.const_data_ptr<T>() + io.act_offset(n) + c0 * io.a.stride_c, io.a);
#if CAMFAST_HAS_AVX2_BUILD
    if constexpr (weighted_channel_sum::weighted(M) && std::is_same_v<T, float> && U == Unit::pixel) {
      if (io.T > 1 && cpu::has_avx2()) {
        add_class_maps_avx2(&a(0, p0), io.a.stride_c, block.C, len, w + n * C + c0, N * C, io.T, sum);
        continue;
      }
    }
#endif
    for (int64_t t = 0; t < io.T; ++t) {
      const int64_t i = t * N + n;
      if constexpr (weighted_channel_sum::weighted(M)) {
        const exact_t<T>* wi = w + i * C + c0;
        cpu::add_channel_sums<U>(block, p0, p1, sum + t * len, [&](int64_t c, int64_t p) {
          return wi[c] * exact_t<T>(widen(a(c, p)));
        });
      } else {
        const auto g = plane<T, U>(io.grad.const_data_ptr<T>() + io.grad_offset(i) + c0 * io.g.stride_c, io.g);
        cpu::add_channel_sums<U>(block, p0, p1, sum + t * len, [&](int64_t c, int64_t p) {
          return weighted_channel_sum::term<M>(widen(g(c, p)), widen(a(c, p)));
        });
      }
    }
  }
  T* out = io.out.mutable_data_ptr<T>();
  for (int64_t t = 0; t < io.T; ++t) {
    T* row = out + (t * N + n) * io.a.P + p0;
    // The ReLU after the rounding to acc_t (the same value, up to the sign of a zero): before
    // it, GCC keeps the loop scalar.
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) row[k] = T(weighted_channel_sum::relu(acc_t<T>(sum[t * len + k])));
  }
}

// The two steps again, compiled for AVX2 (simd.h) and run where the CPU has it.
template <Method M, class T, Unit U>
CAMFAST_AVX2 void image_weights_avx2(const weighted_channel_sum::IO& io, int64_t i, sum_t eps,
                                     WeightScratch<acc_t<T>>& t, exact_t<T>* w) {
  image_weights<M, T, U>(io, i, eps, t, w);
}

template <Method M, class T, Unit U>
CAMFAST_AVX2 void map_block_avx2(const weighted_channel_sum::IO& io, int64_t n, int64_t p0, int64_t p1,
                                 const exact_t<T>* w, sum_t* sum) {
  map_block<M, T, U>(io, n, p0, p1, w, sum);
}

template <class T> struct Kernel {
  using A = acc_t<T>;
  const weighted_channel_sum::IO& io;
  sum_t eps;

  // w[i * K + k]: channel k's weight in image i = t * N + n. Tasks run sample-major, so the
  // classes of one sample follow each other and find its A in cache.
  template <Method M, Unit U> std::vector<exact_t<T>> weights() const {
    const NCP& v = io.a;
    std::vector<exact_t<T>> w(io.images() * v.C);
    const int64_t grain = std::max<int64_t>(1, cpu::kGrainElements / std::max<int64_t>(1, v.C * v.P));
    torch::stable::parallel_for(0, io.images(), grain, [&](int64_t begin, int64_t end) {
      WeightScratch<A> scratch(v.C);
      for (int64_t j = begin; j < end; ++j) {
        const int64_t i = (j % io.T) * v.N + j / io.T;
        const auto step = cpu::has_avx2() ? image_weights_avx2<M, T, U> : image_weights<M, T, U>;
        step(io, i, eps, scratch, w.data() + i * v.C);
      }
    });
    return w;
  }

  template <Method M, Unit U> void maps(const std::vector<exact_t<T>>& w) const {
    cpu::parallel_pixel_blocks(io.a, cpu::pixels_per_block(io.a, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      std::vector<sum_t> sum(io.T * (p1 - p0));
      (cpu::has_avx2() ? map_block_avx2<M, T, U> : map_block<M, T, U>)(io, n, p0, p1, w.data(), sum.data());
    });
  }

  void run() const {
    cpu::dispatch_unit(cpu::unit_axis({io.a, io.g}), [&](auto unit) {
      constexpr Unit U = decltype(unit)::value;
      weighted_channel_sum::dispatch_method(io.method, [&](auto method) {
        constexpr Method M = decltype(method)::value;
        if constexpr (weighted_channel_sum::weighted(M)) {
          maps<M, U>(weights<M, U>());
        } else {
          maps<M, U>({});
        }
      });
    });
  }
};

Tensor weighted_channel_sum_cpu(Tensor act, Tensor grad, std::string method, double eps) {
  const weighted_channel_sum::IO io = weighted_channel_sum::prepare(act, grad, method, eps);
  if (io.images() > 0) {
    dispatch_floating(io.act.scalar_type(), weighted_channel_sum::kOp, [&](auto tag) {
      using T = decltype(tag);
      Kernel<T>{io, eps}.run();
    });
  }
  return io.out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("weighted_channel_sum", TORCH_BOX(&weighted_channel_sum_cpu));
}

}  // namespace camfast
