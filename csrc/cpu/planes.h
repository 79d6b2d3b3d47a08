// Per-sample [C, P] planes for the CPU kernels that mix channels at each pixel (GGAM, ABN).
//
// Their loops run over a block of pixels of one sample, with whichever of the channel or pixel
// axis has unit stride innermost. `Unit` makes that stride a compile-time 1, so the inner loops
// vectorise; tensors with other strides take the generic instantiation.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "../common/layout.h"

namespace camfast::cpu {

enum class Unit { none, channel, pixel };

// One sample of an [N, C, P] tensor.
template <class T, Unit U> struct Plane {
  T* base;
  int64_t stride_c, stride_p;

  T& operator()(int64_t c, int64_t p) const {
    return base[(U == Unit::channel ? c : c * stride_c) + (U == Unit::pixel ? p : p * stride_p)];
  }
};

template <Unit U, class T> Plane<T, U> plane(T* data, const NCP& v, int64_t n) {
  return {data + n * v.stride_n, v.stride_c, v.stride_p};
}

// The axis with unit stride in every view, preferring channels when the first view (the input
// that fixes the output layout) has them innermost.
inline Unit unit_axis(std::initializer_list<NCP> views) {
  const NCP& first = *views.begin();
  const auto all = [&](auto unit) { return std::all_of(views.begin(), views.end(), unit); };
  const bool channel = all([](const NCP& v) { return v.stride_c == 1 || v.C == 1; });
  const bool pixel = all([](const NCP& v) { return v.stride_p == 1 || v.P == 1; });
  if (channel && first.channels_inner()) return Unit::channel;
  return pixel ? Unit::pixel : Unit::none;
}

// f(std::integral_constant<Unit, u>) for the runtime value u.
template <class F> void dispatch_unit(Unit u, const F& f) {
  switch (u) {
    case Unit::channel: return f(std::integral_constant<Unit, Unit::channel>{});
    case Unit::pixel: return f(std::integral_constant<Unit, Unit::pixel>{});
    default: return f(std::integral_constant<Unit, Unit::none>{});
  }
}

// Whether the loops over a block run channels innermost.
template <Unit U> bool channels_innermost(const NCP& v) {
  return U == Unit::channel || (U == Unit::none && v.channels_inner());
}

// sum[i] = sum_c term(c, p0 + i) for the pixels [p0, p1) of one sample. term may also write
// the element (c, p) of an output: the sweep then does both while each value is in a register.
template <Unit U, class A, class F>
void channel_sums(const NCP& v, int64_t p0, int64_t p1, A* sum, const F& term) {
  if (channels_innermost<U>(v)) {
    for (int64_t p = p0; p < p1; ++p) {
      A acc = A(0);
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < v.C; ++c) acc += term(c, p);
      sum[p - p0] = acc;
    }
    return;
  }
  std::fill(sum, sum + (p1 - p0), A(0));
  for (int64_t c = 0; c < v.C; ++c) {
#pragma omp simd
    for (int64_t p = p0; p < p1; ++p) sum[p - p0] += term(c, p);
  }
}

// sum[c] += sum_p term(c, p) over the pixels [p0, p1) of one sample, for every channel c; term
// may also write the element (c, p) of an output.
template <Unit U, class A, class F>
void add_pixel_sums(const NCP& v, int64_t p0, int64_t p1, A* sum, const F& term) {
  if (channels_innermost<U>(v)) {
    for (int64_t p = p0; p < p1; ++p) {
#pragma omp simd
      for (int64_t c = 0; c < v.C; ++c) sum[c] += term(c, p);
    }
    return;
  }
  for (int64_t c = 0; c < v.C; ++c) {
    A acc = A(0);
#pragma omp simd reduction(+ : acc)
    for (int64_t p = p0; p < p1; ++p) acc += term(c, p);
    sum[c] += acc;
  }
}

// f(c, p) for every channel and pixel of [p0, p1), in memory order.
template <Unit U, class F> void for_each_in_block(const NCP& v, int64_t p0, int64_t p1, const F& f) {
  if (channels_innermost<U>(v)) {
    for (int64_t p = p0; p < p1; ++p) {
#pragma omp simd
      for (int64_t c = 0; c < v.C; ++c) f(c, p);
    }
    return;
  }
  for (int64_t c = 0; c < v.C; ++c) {
#pragma omp simd
    for (int64_t p = p0; p < p1; ++p) f(c, p);
  }
}

// Pixels per task: blocks of ~2 MB per tensor read (all channels), so that a block read twice
// (once to reduce over channels, once to write) comes from cache the second time, while NCHW
// rows stay long. Long rows matter more than L2 residency on the CI machine: splitting 784-pixel
// rows into blocks of 512 and 272 made the GGAM backward 1.5x slower (benchmarks/NOTES.md).
inline int64_t pixels_per_block(const NCP& v, int64_t elem_bytes) {
  constexpr int64_t kBlockBytes = 2 << 20;
  const int64_t pixels = kBlockBytes / std::max<int64_t>(1, v.C * elem_bytes);
  return std::clamp<int64_t>(pixels / 16 * 16, 16, 4096);
}

}  // namespace camfast::cpu
