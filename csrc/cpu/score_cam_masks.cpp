// Score-CAM masked inputs on the CPU. Two passes: per map, its extrema (over the upsampled map
// at the "upsampled" stage, recomputed rather than stored); then, in parallel over output rows,
// each mask row once and its product with every image channel, so the output, by far the
// largest tensor, is written once and nothing of its size is read.
#include <tuple>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/score_cam_masks.cuh"
#include "../ops/score_cam_masks.h"
#include "loops.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using score_cam_masks::MapStats;
using score_cam_masks::Tap;

template <class A> std::vector<Tap<A>> axis_taps(int64_t in, int64_t out, bool align_corners) {
  std::vector<Tap<A>> taps(out);
  const A scale = score_cam_masks::source_scale<A>(in, out, align_corners);
  for (int64_t i = 0; i < out; ++i) taps[i] = score_cam_masks::linear_tap<A>(in, out, scale, align_corners, i);
  return taps;
}

template <class T> struct Kernel {
  using A = acc_t<T>;
  const score_cam_masks::IO& io;
  const T* act;
  std::vector<Tap<A>> rows, cols;  // taps of every output row and column

  Kernel(const score_cam_masks::IO& io, bool align_corners)
      : io(io), act(io.act.const_data_ptr<T>()),
        rows(axis_taps<A>(io.a.h, io.H, align_corners)), cols(axis_taps<A>(io.a.w, io.W, align_corners)) {}

  const T* map(int64_t r) const { return act + (r / io.a.K) * io.a.stride_n + (r % io.a.K) * io.a.stride_k; }

  score_cam_masks::Extrema<A> source_extrema(int64_t r) const {
    const T* m = map(r);
    score_cam_masks::Extrema<A> e;
    for (int64_t i = 0; i < io.a.h; ++i) {
      for (int64_t j = 0; j < io.a.w; ++j) e.add(A(m[i * io.a.stride_h + j * io.a.stride_w]));
    }
    return e;
  }

  // Map r, each value mapped by s.source() and each row upsampled along W: h rows of W values.
  // F.interpolate interpolates along W within rows first, so every upsampled row is a lerp of
  // two of these rows: the same operations, in the same order, as from the four taps per pixel.
  void widen(int64_t r, const MapStats<A>& s, A* row, A* wide) const {
    const T* m = map(r);
    for (int64_t i = 0; i < io.a.h; ++i) {
      for (int64_t j = 0; j < io.a.w; ++j) row[j] = s.source(A(m[i * io.a.stride_h + j * io.a.stride_w]));
      A* out = wide + i * io.W;
      for (int64_t x = 0; x < io.W; ++x) out[x] = score_cam_masks::lerp(row[cols[x].i0], row[cols[x].i1], cols[x]);
    }
  }

  void upsample_row(const A* wide, int64_t y, A* up) const {
    const Tap<A> ty = rows[y];
    const A* top = wide + ty.i0 * io.W;
    const A* bottom = wide + ty.i1 * io.W;
#pragma omp simd
    for (int64_t x = 0; x < io.W; ++x) up[x] = score_cam_masks::lerp(top[x], bottom[x], ty);
  }

  // Per-thread scratch: one source row, the widened map and one output row.
  struct Scratch {
    std::vector<A> row, wide, up;
    explicit Scratch(const score_cam_masks::IO& io) : row(io.a.w), wide(io.a.h * io.W), up(io.W) {}
  };

  MapStats<A> stats(int64_t r, bool feature, Scratch& t) const {
    MapStats<A> s = score_cam_masks::source_stats(source_extrema(r), feature);
    if (feature || s.constant) return s;
    widen(r, s, t.row.data(), t.wide.data());
    // NaN never passes `<` or `>`, so per-lane extrema combine exactly; NaN is tracked on the side.
    A lo = -lowest<A>(), hi = lowest<A>();
    int has_nan = 0;
    for (int64_t y = 0; y < io.H; ++y) {
      upsample_row(t.wide.data(), y, t.up.data());
      const A* up = t.up.data();
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : has_nan)
      for (int64_t x = 0; x < io.W; ++x) {
        has_nan |= (up[x] != up[x]);
        lo = up[x] < lo ? up[x] : lo;
        hi = up[x] > hi ? up[x] : hi;
      }
    }
    score_cam_masks::with_upsampled(s, score_cam_masks::Extrema<A>{lo, hi, has_nan != 0});
    return s;
  }

  // out[n, k, :, y, :] = mask row * image[n, :, y, :], with the image's unit stride known at
  // compile time so that the contiguous case vectorises.
  template <bool kUnit> void write_row(int64_t r, int64_t y, const A* mask, T* out) const {
    const NCP& v = io.img;
    const int64_t W = io.W, stride_p = kUnit ? 1 : v.stride_p;
    const T* img = io.image.const_data_ptr<T>() + (r / io.a.K) * v.stride_n + y * W * stride_p;
    for (int64_t c = 0; c < v.C; ++c) {
      const T* in = img + c * v.stride_c;
      T* o = out + (c * io.H + y) * W;
      for (int64_t x = 0; x < W; ++x) o[x] = T(mask[x] * A(in[x * stride_p]));
    }
  }

  void run(bool feature) const {
    const int64_t maps = io.maps(), H = io.H, W = io.W, C = io.img.C;
    const int64_t map_size = io.a.h * io.a.w;
    std::vector<MapStats<A>> stats_of(maps);
    bool* constant = io.constant.mutable_data_ptr<bool>();
    // An image of no pixels or channels still gets its maps' constant flags: no division by 0.
    const int64_t stats_work = std::max<int64_t>(1, feature ? map_size : H * W);
    const int64_t stats_grain = std::max<int64_t>(1, cpu::kGrainElements / stats_work);
    torch::stable::parallel_for(0, maps, stats_grain, [&](int64_t begin, int64_t end) {
      Scratch t(io);
      for (int64_t r = begin; r < end; ++r) {
        stats_of[r] = stats(r, feature, t);
        constant[r] = stats_of[r].constant;
      }
    });
    T* out = io.out.mutable_data_ptr<T>();
    const int64_t row_grain = std::max<int64_t>(1, cpu::kGrainElements / std::max<int64_t>(1, C * W));
    torch::stable::parallel_for(0, maps * H, row_grain, [&](int64_t begin, int64_t end) {
      Scratch t(io);
      A* mask = t.up.data();
      int64_t widened = -1;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t r = row / H, y = row % H;
        const MapStats<A> s = stats_of[r];
        if (r != widened) {
          widen(r, s, t.row.data(), t.wide.data());
          widened = r;
        }
        upsample_row(t.wide.data(), y, mask);
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) mask[x] = s.mask(mask[x]);
        T* o = out + r * C * H * W;
        if (io.img.stride_p == 1) {
          write_row<true>(r, y, mask, o);
        } else {
          write_row<false>(r, y, mask, o);
        }
      }
    });
  }
};

std::tuple<Tensor, Tensor> score_cam_masks_cpu(Tensor act, Tensor image, bool align_corners, bool normalize_feature) {
  const score_cam_masks::IO io = score_cam_masks::prepare(act, image);
  if (io.maps() > 0) {
    dispatch_floating(io.act.scalar_type(), score_cam_masks::kOp, [&](auto tag) {
      Kernel<decltype(tag)>(io, align_corners).run(normalize_feature);
    });
  }
  return {io.out, io.constant};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("score_cam_masks", TORCH_BOX(&score_cam_masks_cpu));
}

}  // namespace camfast
