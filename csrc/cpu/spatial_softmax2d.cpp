// Spatial softmax and soft-argmax on the CPU: forward and backward, NCHW and channels_last in place.
//
// A row of H*W values stays in L1 (a block of 64 channels x H*W in L2 when channels are innermost)
// while the max pass and the exp pass run over it, so x is read from memory once. The soft-argmax
// never writes the softmax: the exp pass accumulates sum(e), sum(e X) and sum(e Y) directly.
// The exp makes these loops compute-bound, so every row and block kernel is compiled for AVX-512,
// AVX2 and the baseline (CAMFAST_SIMD_CLONES).
#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/spatial_softmax2d.cuh"
#include "../ops/spatial_softmax2d.h"
#include "loops.h"
#include "simd.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cpu::exp_nonpositive;
using cpu::kChannelBlock;
using cpu::Stride;

// Per-pixel coordinates X[p], Y[p] of one map, shared read-only by every row.
template <class A> struct Coordinates {
  std::vector<A> x, y;

  Coordinates(int64_t H, int64_t W, bool normalized) : x(H * W), y(H * W) {
    for (int64_t i = 0; i < H; ++i) {
      for (int64_t j = 0; j < W; ++j) {
        x[i * W + j] = spatial_softmax2d::coordinate<A>(j, W, normalized);
        y[i * W + j] = spatial_softmax2d::coordinate<A>(i, H, normalized);
      }
    }
  }
};

// ---- one row: contiguous (kUnit) or strided ----

template <class T, bool kUnit>
CAMFAST_SIMD_CLONES
acc_t<T> row_max(const T* x, Stride<kUnit> at, int64_t P, acc_t<T> inv_t) {
  using A = acc_t<T>;
  A m = lowest<A>();
  int has_nan = 0;
#pragma omp simd reduction(max : m) reduction(| : has_nan)
  for (int64_t p = 0; p < P; ++p) {
    const A z = A(x[at(p)]) * inv_t;
    has_nan |= (z != z);
    m = z > m ? z : m;
  }
  return has_nan ? quiet_nan<A>() : m;
}

// The softmax's exp pass keeps exp(z - max) in the output for the rescaling pass where the output
// type holds it exactly; a float16 or bfloat16 output would round it twice (up to twice eager's
// error), so that pass recomputes it instead.
template <class T> constexpr bool kKeepsExp = std::is_same_v<T, acc_t<T>>;

// The sums run in float blocks added in double (loops.h, kSumChain, lane_sum).
using cpu::kWideSumBlock;
using cpu::kSumChain;
using cpu::lane_sum;

template <class T, bool kUnit>
CAMFAST_SIMD_CLONES
void softmax_row(const T* x, Stride<kUnit> xa, T* out, Stride<kUnit> oa, int64_t P, acc_t<T> inv_t, acc_t<T>* m,
                 acc_t<T>* s) {
  using A = acc_t<T>;
  const A mx = row_max(x, xa, P, inv_t);
  const sum_t sum = lane_sum<A, kWideSumBlock>(P, [&](int64_t p) {
    const A e = exp_nonpositive(A(x[xa(p)]) * inv_t - mx);
    if constexpr (kKeepsExp<T>) out[oa(p)] = T(e);
    return e;
  });
  const A inv_s = A(1 / sum);
#pragma omp simd
  for (int64_t p = 0; p < P; ++p) {
    const A e = kKeepsExp<T> ? A(out[oa(p)]) : exp_nonpositive(A(x[xa(p)]) * inv_t - mx);
    out[oa(p)] = T(e * inv_s);
  }
  *m = mx;
  *s = A(sum);
}

// grad_x doubles as the buffer for p between the two passes.
template <class T, bool kUnit>
CAMFAST_SIMD_CLONES
void softmax_backward_row(const T* g, Stride<kUnit> ga, const T* x, Stride<kUnit> xa, T* gx, Stride<kUnit> oa,
                          int64_t P, acc_t<T> inv_t, acc_t<T> m, acc_t<T> inv_s) {
  using A = acc_t<T>;
  const A dot = A(lane_sum<A>(P, [&](int64_t p) {
    const A y = exp_nonpositive(A(x[xa(p)]) * inv_t - m) * inv_s;
    gx[oa(p)] = T(y);
    return A(g[ga(p)]) * y;
  }));
#pragma omp simd
  for (int64_t p = 0; p < P; ++p) gx[oa(p)] = T(inv_t * A(gx[oa(p)]) * (A(g[ga(p)]) - dot));
}

template <class T, bool kUnit>
CAMFAST_SIMD_CLONES
void soft_argmax_row(const T* x, Stride<kUnit> xa, int64_t P, const acc_t<T>* X, const acc_t<T>* Y, acc_t<T> inv_t,
                     acc_t<T>* out, acc_t<T>* m, acc_t<T>* s) {
  using A = acc_t<T>;
  const A mx = row_max(x, xa, P, inv_t);
  sum_t sum = 0, sx = 0, sy = 0;
  for (int64_t p0 = 0; p0 < P; p0 += kWideSumBlock) {
    const int64_t p1 = std::min(P, p0 + kWideSumBlock);
    A part = A(0), part_x = A(0), part_y = A(0);
#pragma omp simd reduction(+ : part, part_x, part_y)
    for (int64_t p = p0; p < p1; ++p) {
      const A e = exp_nonpositive(A(x[xa(p)]) * inv_t - mx);
      part += e;
      part_x += e * X[p];
      part_y += e * Y[p];
    }
    sum += part;
    sx += part_x;
    sy += part_y;
  }
  out[0] = A(sx / sum);
  out[1] = A(sy / sum);
  *m = mx;
  *s = A(sum);
}

template <class T, bool kUnit>
CAMFAST_SIMD_CLONES
void soft_argmax_backward_row(const acc_t<T>* g, const acc_t<T>* out, const T* x, Stride<kUnit> xa, T* gx,
                              Stride<kUnit> oa, int64_t P, const acc_t<T>* X, const acc_t<T>* Y, acc_t<T> inv_t,
                              acc_t<T> m, acc_t<T> s) {
  using A = acc_t<T>;
  const A g_x = g[0], g_y = g[1];
  const A c = spatial_softmax2d::expected_dot(g_x, g_y, out[0], out[1]);
  const A k = inv_t / s;
#pragma omp simd
  for (int64_t p = 0; p < P; ++p) {
    gx[oa(p)] = T(k * exp_nonpositive(A(x[xa(p)]) * inv_t - m) * (g_x * X[p] + g_y * Y[p] - c));
  }
}

// ---- a block of channels, channels innermost: every pass vectorised over C ----

// row_max over a block: m[c] for c < nc, x at x[p * x_stride + c] (x_stride: the pixel stride).
template <class T>
CAMFAST_SIMD_CLONES
void block_max(const T* x, int64_t x_stride, int64_t P, int64_t nc, acc_t<T> inv_t, acc_t<T>* m) {
  using A = acc_t<T>;
  // Local arrays (no aliasing with x) and int flags (bool arrays do not vectorise).
  A mx[kChannelBlock];
  int32_t has_nan[kChannelBlock];
  for (int64_t c = 0; c < nc; ++c) {
    mx[c] = lowest<A>();
    has_nan[c] = 0;
  }
  for (int64_t p = 0; p < P; ++p) {
    const T* px = x + p * x_stride;
    for (int64_t c = 0; c < nc; ++c) {
      const A z = A(px[c]) * inv_t;
      has_nan[c] |= int32_t(z != z);
      mx[c] = z > mx[c] ? z : mx[c];
    }
  }
  for (int64_t c = 0; c < nc; ++c) m[c] = has_nan[c] ? quiet_nan<A>() : mx[c];
}

template <class T>
CAMFAST_SIMD_CLONES
void softmax_block(const T* x, int64_t x_stride, T* out, int64_t out_stride, int64_t P, int64_t nc, acc_t<T> inv_t,
                   acc_t<T>* m, acc_t<T>* s) {
  using A = acc_t<T>;
  block_max(x, x_stride, P, nc, inv_t, m);
  sum_t sum[kChannelBlock];
  A part[kChannelBlock];
  for (int64_t c = 0; c < nc; ++c) sum[c] = 0;
  for (int64_t p0 = 0; p0 < P; p0 += kSumChain) {
    for (int64_t c = 0; c < nc; ++c) part[c] = A(0);
    for (int64_t p = p0; p < std::min(P, p0 + kSumChain); ++p) {
      const T* px = x + p * x_stride;
      T* po = out + p * out_stride;
      for (int64_t c = 0; c < nc; ++c) {
        const A e = exp_nonpositive(A(px[c]) * inv_t - m[c]);
        if constexpr (kKeepsExp<T>) po[c] = T(e);
        part[c] += e;
      }
    }
    for (int64_t c = 0; c < nc; ++c) sum[c] += part[c];
  }
  A inv_s[kChannelBlock];
  for (int64_t c = 0; c < nc; ++c) {
    s[c] = A(sum[c]);
    inv_s[c] = A(1 / sum[c]);
  }
  for (int64_t p = 0; p < P; ++p) {
    const T* px = x + p * x_stride;
    T* po = out + p * out_stride;
    for (int64_t c = 0; c < nc; ++c) {
      const A e = kKeepsExp<T> ? A(po[c]) : exp_nonpositive(A(px[c]) * inv_t - m[c]);
      po[c] = T(e * inv_s[c]);
    }
  }
}

template <class T>
CAMFAST_SIMD_CLONES
void softmax_backward_block(const T* g, int64_t g_stride, const T* x, int64_t x_stride, T* gx, int64_t out_stride,
                            int64_t P, int64_t nc, acc_t<T> inv_t, const acc_t<T>* m, const acc_t<T>* s) {
  using A = acc_t<T>;
  A inv_s[kChannelBlock], dot[kChannelBlock], part[kChannelBlock];
  sum_t sum[kChannelBlock];
  for (int64_t c = 0; c < nc; ++c) {
    inv_s[c] = A(1) / s[c];
    sum[c] = 0;
  }
  for (int64_t p0 = 0; p0 < P; p0 += kSumChain) {
    for (int64_t c = 0; c < nc; ++c) part[c] = A(0);
    for (int64_t p = p0; p < std::min(P, p0 + kSumChain); ++p) {
      const T *px = x + p * x_stride, *pg = g + p * g_stride;
      T* po = gx + p * out_stride;
      for (int64_t c = 0; c < nc; ++c) {
        const A y = exp_nonpositive(A(px[c]) * inv_t - m[c]) * inv_s[c];
        po[c] = T(y);
        part[c] += A(pg[c]) * y;
      }
    }
    for (int64_t c = 0; c < nc; ++c) sum[c] += part[c];
  }
  for (int64_t c = 0; c < nc; ++c) dot[c] = A(sum[c]);
  for (int64_t p = 0; p < P; ++p) {
    const T* pg = g + p * g_stride;
    T* po = gx + p * out_stride;
    for (int64_t c = 0; c < nc; ++c) po[c] = T(inv_t * A(po[c]) * (A(pg[c]) - dot[c]));
  }
}

template <class T>
CAMFAST_SIMD_CLONES
void soft_argmax_block(const T* x, int64_t x_stride, int64_t P, int64_t nc, const acc_t<T>* X, const acc_t<T>* Y,
                       acc_t<T> inv_t, acc_t<T>* out, acc_t<T>* m, acc_t<T>* s) {
  using A = acc_t<T>;
  block_max(x, x_stride, P, nc, inv_t, m);
  sum_t sum[kChannelBlock], sx[kChannelBlock], sy[kChannelBlock];
  A part[kChannelBlock], part_x[kChannelBlock], part_y[kChannelBlock];
  for (int64_t c = 0; c < nc; ++c) sum[c] = sx[c] = sy[c] = 0;
  for (int64_t p0 = 0; p0 < P; p0 += kSumChain) {
    for (int64_t c = 0; c < nc; ++c) part[c] = part_x[c] = part_y[c] = A(0);
    for (int64_t p = p0; p < std::min(P, p0 + kSumChain); ++p) {
      const T* px = x + p * x_stride;
      const A cx = X[p], cy = Y[p];
      for (int64_t c = 0; c < nc; ++c) {
        const A e = exp_nonpositive(A(px[c]) * inv_t - m[c]);
        part[c] += e;
        part_x[c] += e * cx;
        part_y[c] += e * cy;
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      sum[c] += part[c];
      sx[c] += part_x[c];
      sy[c] += part_y[c];
    }
  }
  for (int64_t c = 0; c < nc; ++c) {
    out[2 * c] = A(sx[c] / sum[c]);
    out[2 * c + 1] = A(sy[c] / sum[c]);
    s[c] = A(sum[c]);
  }
}

template <class T>
CAMFAST_SIMD_CLONES
void soft_argmax_backward_block(const acc_t<T>* g, const acc_t<T>* out, const T* x, int64_t x_stride, T* gx,
                                int64_t out_stride, int64_t P, int64_t nc, const acc_t<T>* X, const acc_t<T>* Y,
                                acc_t<T> inv_t, const acc_t<T>* m, const acc_t<T>* s) {
  using A = acc_t<T>;
  A g_x[kChannelBlock], g_y[kChannelBlock], c0[kChannelBlock], k[kChannelBlock];
  for (int64_t c = 0; c < nc; ++c) {
    g_x[c] = g[2 * c];
    g_y[c] = g[2 * c + 1];
    c0[c] = spatial_softmax2d::expected_dot(g_x[c], g_y[c], out[2 * c], out[2 * c + 1]);
    k[c] = inv_t / s[c];
  }
  for (int64_t p = 0; p < P; ++p) {
    const T* px = x + p * x_stride;
    T* po = gx + p * out_stride;
    const A cx = X[p], cy = Y[p];
    for (int64_t c = 0; c < nc; ++c) {
      po[c] = T(k[c] * exp_nonpositive(A(px[c]) * inv_t - m[c]) * (g_x[c] * cx + g_y[c] * cy - c0[c]));
    }
  }
}

// ---- whole tensors ----

// Maps of fewer than kSmallMap pixels, rows contiguous (NCHW): a row kernel would run its few
// pixels through the vector loops' scalar remainders, an exp per element at scalar speed (3 x 3
// maps ran at 0.7x eager). A block of rows is transposed into a channels-innermost scratch
// instead, and the block kernels vectorise over its channels.
constexpr int64_t kSmallMap = 16;

bool small_rows(const NCP& v) { return !v.channels_inner() && v.P < kSmallMap; }

// Up to kChannelBlock rows of up to kSmallMap pixels, channels innermost (pixel stride kStride).
template <class T> struct SmallBlock {
  static constexpr int64_t kStride = kChannelBlock;
  T data[kSmallMap * kChannelBlock];

  // Rows [c0, c0 + nc) of sample n of the tensor at base, laid out as v says.
  void load(const T* base, const NCP& v, int64_t n, int64_t c0, int64_t nc) {
    const T* x = base + n * v.stride_n + c0 * v.stride_c;
    for (int64_t c = 0; c < nc; ++c) {
      for (int64_t p = 0; p < v.P; ++p) data[p * kStride + c] = x[c * v.stride_c + p * v.stride_p];
    }
  }
  void store(T* base, const NCP& o, int64_t n, int64_t c0, int64_t nc) const {
    T* out = base + n * o.stride_n + c0 * o.stride_c;
    for (int64_t c = 0; c < nc; ++c) {
      for (int64_t p = 0; p < o.P; ++p) out[c * o.stride_c + p * o.stride_p] = data[p * kStride + c];
    }
  }
};

// row(n, c) for every row, or block(n, c0, c1) per block of channels [c0, c1) when channels are innermost.
template <class Rows, class Blocks>
void for_rows(const NCP& v, bool blocks, const Rows& row, const Blocks& block) {
  if (blocks) {
    cpu::parallel_channel_blocks(v, block);
  } else {
    cpu::parallel_rows(v, row);
  }
}

template <class T> void softmax_forward(const spatial_softmax2d::SoftmaxForwardIO& io, double temperature) {
  using A = acc_t<T>;
  const NCP &v = io.x.v, &o = io.out.v;
  const T* x_ptr = io.x.t.const_data_ptr<T>();
  T* out_ptr = io.out.t.mutable_data_ptr<T>();
  A* max_ptr = io.stats.max.mutable_data_ptr<A>();
  A* sum_ptr = io.stats.sum.mutable_data_ptr<A>();
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  if (small_rows(v)) {
    cpu::parallel_channel_blocks(v, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t r = n * v.C + c0, nc = c1 - c0;
      SmallBlock<T> in, out;
      in.load(x_ptr, v, n, c0, nc);
      softmax_block(in.data, in.kStride, out.data, out.kStride, v.P, nc, inv_t, max_ptr + r, sum_ptr + r);
      out.store(out_ptr, o, n, c0, nc);
    });
    return;
  }
  for_rows(
      v, v.channels_inner(),
      [&](int64_t n, int64_t c) {
        const int64_t r = n * v.C + c;
        const T* x = x_ptr + n * v.stride_n + c * v.stride_c;
        T* out = out_ptr + n * o.stride_n + c * o.stride_c;
        cpu::with_strides([&](auto xs, auto os) { softmax_row(x, xs, out, os, v.P, inv_t, max_ptr + r, sum_ptr + r); },
                          v.stride_p, o.stride_p);
      },
      [&](int64_t n, int64_t c0, int64_t c1) {
        const int64_t r = n * v.C + c0;
        const T* x = x_ptr + n * v.stride_n + c0;
        T* out = out_ptr + n * o.stride_n + c0;
        softmax_block(x, v.stride_p, out, o.stride_p, v.P, c1 - c0, inv_t, max_ptr + r, sum_ptr + r);
      });
}

template <class T> void softmax_backward(const spatial_softmax2d::SoftmaxBackwardIO& io, double temperature) {
  using A = acc_t<T>;
  const NCP &gv = io.grad_out.v, &v = io.x.v, &o = io.grad_x.v;
  const T* grad_out_ptr = io.grad_out.t.const_data_ptr<T>();
  const T* x_ptr = io.x.t.const_data_ptr<T>();
  T* grad_x_ptr = io.grad_x.t.mutable_data_ptr<T>();
  const A* max_ptr = io.stats.max.const_data_ptr<A>();
  const A* sum_ptr = io.stats.sum.const_data_ptr<A>();
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  if (small_rows(v) && small_rows(gv)) {
    cpu::parallel_channel_blocks(v, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t r = n * v.C + c0, nc = c1 - c0;
      SmallBlock<T> g, x, gx;
      g.load(grad_out_ptr, gv, n, c0, nc);
      x.load(x_ptr, v, n, c0, nc);
      softmax_backward_block(g.data, g.kStride, x.data, x.kStride, gx.data, gx.kStride, v.P, nc, inv_t, max_ptr + r,
                             sum_ptr + r);
      gx.store(grad_x_ptr, o, n, c0, nc);
    });
    return;
  }
  for_rows(
      v, v.channels_inner() && gv.channels_inner(),
      [&](int64_t n, int64_t c) {
        const int64_t r = n * v.C + c;
        const T* g = grad_out_ptr + n * gv.stride_n + c * gv.stride_c;
        const T* x = x_ptr + n * v.stride_n + c * v.stride_c;
        T* gx = grad_x_ptr + n * o.stride_n + c * o.stride_c;
        const A inv_s = A(1) / sum_ptr[r];
        cpu::with_strides(
            [&](auto gs, auto xs, auto os) {
              softmax_backward_row(g, gs, x, xs, gx, os, v.P, inv_t, max_ptr[r], inv_s);
            },
            gv.stride_p, v.stride_p, o.stride_p);
      },
      [&](int64_t n, int64_t c0, int64_t c1) {
        const int64_t r = n * v.C + c0;
        const T* g = grad_out_ptr + n * gv.stride_n + c0;
        const T* x = x_ptr + n * v.stride_n + c0;
        T* gx = grad_x_ptr + n * o.stride_n + c0;
        softmax_backward_block(g, gv.stride_p, x, v.stride_p, gx, o.stride_p, v.P, c1 - c0, inv_t, max_ptr + r,
                               sum_ptr + r);
      });
}

template <class T>
void soft_argmax_forward(const spatial_softmax2d::ArgmaxForwardIO& io, double temperature,
                         const Coordinates<acc_t<T>>& xy) {
  using A = acc_t<T>;
  const NCP& v = io.x.v;
  const T* x_ptr = io.x.t.const_data_ptr<T>();
  A* out_ptr = io.out.mutable_data_ptr<A>();
  A* max_ptr = io.stats.max.mutable_data_ptr<A>();
  A* sum_ptr = io.stats.sum.mutable_data_ptr<A>();
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  const A *X = xy.x.data(), *Y = xy.y.data();
  if (small_rows(v)) {
    cpu::parallel_channel_blocks(v, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t r = n * v.C + c0, nc = c1 - c0;
      SmallBlock<T> x;
      x.load(x_ptr, v, n, c0, nc);
      soft_argmax_block(x.data, x.kStride, v.P, nc, X, Y, inv_t, out_ptr + 2 * r, max_ptr + r, sum_ptr + r);
    });
    return;
  }
  for_rows(
      v, v.channels_inner(),
      [&](int64_t n, int64_t c) {
        const int64_t r = n * v.C + c;
        const T* x = x_ptr + n * v.stride_n + c * v.stride_c;
        cpu::with_strides(
            [&](auto xs) { soft_argmax_row(x, xs, v.P, X, Y, inv_t, out_ptr + 2 * r, max_ptr + r, sum_ptr + r); },
            v.stride_p);
      },
      [&](int64_t n, int64_t c0, int64_t c1) {
        const int64_t r = n * v.C + c0;
        const T* x = x_ptr + n * v.stride_n + c0;
        soft_argmax_block(x, v.stride_p, v.P, c1 - c0, X, Y, inv_t, out_ptr + 2 * r, max_ptr + r, sum_ptr + r);
      });
}

template <class T>
void soft_argmax_backward(const spatial_softmax2d::ArgmaxBackwardIO& io, double temperature,
                          const Coordinates<acc_t<T>>& xy) {
  using A = acc_t<T>;
  const NCP &v = io.x.v, &o = io.grad_x.v;
  const A* grad_out_ptr = io.grad_out.const_data_ptr<A>();
  const A* out_ptr = io.out.const_data_ptr<A>();
  const T* x_ptr = io.x.t.const_data_ptr<T>();
  T* grad_x_ptr = io.grad_x.t.mutable_data_ptr<T>();
  const A* max_ptr = io.stats.max.const_data_ptr<A>();
  const A* sum_ptr = io.stats.sum.const_data_ptr<A>();
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  const A *X = xy.x.data(), *Y = xy.y.data();
  if (small_rows(v)) {
    cpu::parallel_channel_blocks(v, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t r = n * v.C + c0, nc = c1 - c0;
      SmallBlock<T> x, gx;
      x.load(x_ptr, v, n, c0, nc);
      soft_argmax_backward_block(grad_out_ptr + 2 * r, out_ptr + 2 * r, x.data, x.kStride, gx.data, gx.kStride, v.P,
                                 nc, X, Y, inv_t, max_ptr + r, sum_ptr + r);
      gx.store(grad_x_ptr, o, n, c0, nc);
    });
    return;
  }
  for_rows(
      v, v.channels_inner(),
      [&](int64_t n, int64_t c) {
        const int64_t r = n * v.C + c;
        const T* x = x_ptr + n * v.stride_n + c * v.stride_c;
        T* gx = grad_x_ptr + n * o.stride_n + c * o.stride_c;
        cpu::with_strides(
            [&](auto xs, auto os) {
              soft_argmax_backward_row(grad_out_ptr + 2 * r, out_ptr + 2 * r, x, xs, gx, os, v.P, X, Y, inv_t,
                                       max_ptr[r], sum_ptr[r]);
            },
            v.stride_p, o.stride_p);
      },
      [&](int64_t n, int64_t c0, int64_t c1) {
        const int64_t r = n * v.C + c0;
        const T* x = x_ptr + n * v.stride_n + c0;
        T* gx = grad_x_ptr + n * o.stride_n + c0;
        soft_argmax_backward_block(grad_out_ptr + 2 * r, out_ptr + 2 * r, x, v.stride_p, gx, o.stride_p, v.P, c1 - c0,
                                   X, Y, inv_t, max_ptr + r, sum_ptr + r);
      });
}

// ---- registered entry points ----

std::tuple<Tensor, Tensor, Tensor> spatial_softmax2d_cpu(Tensor x, double temperature) {
  const auto io = spatial_softmax2d::prepare_softmax_forward(x, temperature);
  if (io.x.t.numel() > 0) {
    dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kSoftmax,
                      [&](auto tag) { softmax_forward<decltype(tag)>(io, temperature); });
  }
  return {io.out.t, io.stats.max, io.stats.sum};
}

Tensor spatial_softmax2d_backward_cpu(Tensor grad_out, Tensor x, Tensor row_max, Tensor row_sum, double temperature) {
  const auto io = spatial_softmax2d::prepare_softmax_backward(grad_out, x, row_max, row_sum, temperature);
  if (io.x.t.numel() > 0) {
    dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kSoftmax,
                      [&](auto tag) { softmax_backward<decltype(tag)>(io, temperature); });
  }
  return io.grad_x.t;
}

std::tuple<Tensor, Tensor, Tensor> spatial_soft_argmax2d_cpu(Tensor x, double temperature, bool normalized) {
  const auto io = spatial_softmax2d::prepare_argmax_forward(x, temperature);
  if (io.x.t.numel() > 0) {
    dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kArgmax, [&](auto tag) {
      using T = decltype(tag);
      soft_argmax_forward<T>(io, temperature, Coordinates<acc_t<T>>(io.x.t.size(2), io.x.t.size(3), normalized));
    });
  }
  return {io.out, io.stats.max, io.stats.sum};
}

Tensor spatial_soft_argmax2d_backward_cpu(Tensor grad_out, Tensor x, Tensor out, Tensor row_max, Tensor row_sum,
                                          double temperature, bool normalized) {
  const auto io = spatial_softmax2d::prepare_argmax_backward(grad_out, x, out, row_max, row_sum, temperature);
  if (io.x.t.numel() > 0) {
    dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kArgmax, [&](auto tag) {
      using T = decltype(tag);
      soft_argmax_backward<T>(io, temperature, Coordinates<acc_t<T>>(io.x.t.size(2), io.x.t.size(3), normalized));
    });
  }
  return io.grad_x.t;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("spatial_softmax2d", TORCH_BOX(&spatial_softmax2d_cpu));
  m.impl("_spatial_softmax2d_backward", TORCH_BOX(&spatial_softmax2d_backward_cpu));
  m.impl("spatial_soft_argmax2d", TORCH_BOX(&spatial_soft_argmax2d_cpu));
  m.impl("_spatial_soft_argmax2d_backward", TORCH_BOX(&spatial_soft_argmax2d_backward_cpu));
}

}  // namespace camfast
