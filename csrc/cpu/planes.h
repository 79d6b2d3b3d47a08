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
#include <vector>

#include "../common/layout.h"
#include "loops.h"

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

// The sums below add terms of type Term into totals of type S: in blocks of Term (float for the
// float kernels), so that the loops keep their float speed (loops.h, kSumChain); one block when
// the totals have the terms' type.
template <class F> using TermOf = decltype(std::declval<const F&>()(int64_t(0), int64_t(0)));
template <class Term, class S> constexpr int64_t chain(int64_t n) {
  return std::is_same_v<Term, S> ? std::max<int64_t>(n, 1) : kSumChain;
}

// part[i] += term(c0, p0 + i) + ... + term(c1 - 1, p0 + i), added in channel order, four channels
// per pass over the row: a quarter of the loads and stores of part that one pass per channel makes.
template <class Term, class F>
void add_rows(int64_t p0, int64_t p1, int64_t c0, int64_t c1, Term* __restrict part, const F& term) {
  int64_t c = c0;
  for (; c + 4 <= c1; c += 4) {
#pragma omp simd
    for (int64_t p = p0; p < p1; ++p) {
      part[p - p0] = part[p - p0] + term(c, p) + term(c + 1, p) + term(c + 2, p) + term(c + 3, p);
    }
  }
  for (; c < c1; ++c) {
#pragma omp simd
    for (int64_t p = p0; p < p1; ++p) part[p - p0] += term(c, p);
  }
}

// sum[i] += sum_c term(c, p0 + i) for the pixels [p0, p1) of one sample. term may also write
// the element (c, p) of an output: the sweep then does both while each value is in a register.
template <Unit U, class S, class F>
void add_channel_sums(const NCP& v, int64_t p0, int64_t p1, S* sum, const F& term) {
  using Term = TermOf<F>;
  if (channels_innermost<U>(v)) {
    for (int64_t p = p0; p < p1; ++p) {
      S total = S(0);
      for (int64_t c0 = 0; c0 < v.C; c0 += kLaneSumBlock) {
        const int64_t c1 = std::min(v.C, c0 + kLaneSumBlock);
        Term part = Term(0);
#pragma omp simd reduction(+ : part)
        for (int64_t c = c0; c < c1; ++c) part += term(c, p);
        total += part;
      }
      sum[p - p0] += total;
    }
    return;
  }
  // Pixels innermost: the terms are added into a row of partial sums per block of channels (into
  // sum itself when the terms have its type).
  const int64_t len = p1 - p0;
  if constexpr (std::is_same_v<Term, S>) {
    add_rows(p0, p1, 0, v.C, sum, term);
  } else {
    std::vector<Term> row(len);
    Term* part = row.data();
    for (int64_t c0 = 0; c0 < v.C; c0 += kSumChain) {
      std::fill(part, part + len, Term(0));
      add_rows(p0, p1, c0, std::min(v.C, c0 + kSumChain), part, term);
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) sum[i] += part[i];
    }
  }
}

// sum[i] = sum_c term(c, p0 + i), as add_channel_sums.
template <Unit U, class S, class F>
void channel_sums(const NCP& v, int64_t p0, int64_t p1, S* sum, const F& term) {
  std::fill(sum, sum + (p1 - p0), S(0));
  add_channel_sums<U>(v, p0, p1, sum, term);
}

// sum[c] += sum_p term(c, p) over the pixels [p0, p1) of one sample, for every channel c; term
// may also write the element (c, p) of an output.
template <Unit U, class S, class F>
void add_pixel_sums(const NCP& v, int64_t p0, int64_t p1, S* sum, const F& term) {
  using Term = TermOf<F>;
  if (channels_innermost<U>(v)) {
    // Channels innermost: a row of partial sums per block of pixels.
    const int64_t block = chain<Term, S>(p1 - p0);
    std::vector<Term> row(v.C);
    Term* part = row.data();
    for (int64_t b0 = p0; b0 < p1; b0 += block) {
      std::fill(part, part + v.C, Term(0));
      for (int64_t p = b0; p < std::min(p1, b0 + block); ++p) {
#pragma omp simd
        for (int64_t c = 0; c < v.C; ++c) part[c] += term(c, p);
      }
#pragma omp simd
      for (int64_t c = 0; c < v.C; ++c) sum[c] += part[c];
    }
    return;
  }
  for (int64_t c = 0; c < v.C; ++c) {
    S total = S(0);
    for (int64_t b0 = p0; b0 < p1; b0 += kLaneSumBlock) {
      const int64_t b1 = std::min(p1, b0 + kLaneSumBlock);
      Term part = Term(0);
#pragma omp simd reduction(+ : part)
      for (int64_t p = b0; p < b1; ++p) part += term(c, p);
      total += part;
    }
    sum[c] += total;
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
