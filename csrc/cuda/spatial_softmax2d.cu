// Spatial softmax and soft-argmax on CUDA: forward and backward, NCHW and channels_last in place.
//
// NCHW rows are contiguous: one warp handles one row. With channels innermost a block covers 32
// consecutive channels (coalesced) and 8 pixel lanes per channel, combined through shared memory.
// The softmax makes a max pass, a sum pass and a write pass over its row (the later passes hit
// L1/L2); the soft-argmax accumulates online (spatial_softmax2d::OnlineSums), one pass, the softmax never written.
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/spatial_softmax2d.cuh"
#include "../ops/spatial_softmax2d.h"
#include "cuda_utils.cuh"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cuda::kWarp;
using spatial_softmax2d::OnlineSums;

constexpr int kRowsPerBlock = 8;  // warps per block in the row kernels
constexpr int kTileC = kWarp;     // channels per block in the channel-tile kernels
constexpr int kTileP = 8;         // pixel lanes per channel in the channel-tile kernels

// ---- reductions ----

template <class A> __device__ __forceinline__ OnlineSums<A> warp_merge(OnlineSums<A> v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    OnlineSums<A> o;
    o.m = __shfl_xor_sync(0xffffffffu, v.m, offset);
    o.s = __shfl_xor_sync(0xffffffffu, v.s, offset);
    o.sx = __shfl_xor_sync(0xffffffffu, v.sx, offset);
    o.sy = __shfl_xor_sync(0xffffffffu, v.sy, offset);
    v.merge(o);
  }
  return v;
}

// The total over the kTileP pixel lanes of this thread's channel, returned to every lane.
// (Raw shared storage: V may have default member initialisers, which __shared__ forbids.)
template <class V, class Merge> __device__ V column_total(const V& v, Merge merge) {
  __shared__ alignas(V) unsigned char storage[sizeof(V) * kTileP * kTileC];
  V* slot = reinterpret_cast<V*>(storage);
  slot[threadIdx.y * kTileC + threadIdx.x] = v;
  __syncthreads();
  V total = slot[threadIdx.x];
  for (int i = 1; i < kTileP; ++i) merge(total, slot[i * kTileC + threadIdx.x]);
  __syncthreads();  // the storage is reused by the next call
  return total;
}

template <class A> __device__ A column_sum(A v) {
  return column_total(v, [](A& a, const A& b) { a += b; });
}

// ---- where a thread works: a warp on a row, or a (channel, pixel lane) of a channel tile ----

struct RowLane {
  int64_t row;  // n * C + c, or >= N * C for warps past the end
  int lane;
  __device__ RowLane() : row(int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp), lane(threadIdx.x % kWarp) {}
  __device__ int64_t first() const { return lane; }
  static constexpr int kStep = kWarp;
};

struct TileLane {
  int64_t row;  // n * C + c
  bool active;  // c < C
  __device__ TileLane(const NCP& v) {
    const int64_t tiles = cuda::ceil_div(v.C, kTileC);
    const int64_t n = blockIdx.x / tiles, c = (blockIdx.x % tiles) * kTileC + threadIdx.x;
    active = c < v.C;
    row = n * v.C + (active ? c : 0);
  }
  __device__ int64_t first() const { return threadIdx.y; }
  static constexpr int kStep = kTileP;
};

// What one thread of a row (warp per row) or tile (channels_last) kernel works on.
struct Lane {
  int64_t row;    // n * C + c
  int64_t first;  // first pixel; then every step-th
  int step;
  bool active;    // a real channel (tile lanes past C only join the reductions)
  bool leader;    // writes the row's statistics
  bool past_end;  // a row warp past N * C: the whole warp leaves at once
};

template <bool kTile> __device__ Lane lane_of(const NCP& v) {
  if constexpr (kTile) {
    const TileLane t(v);
    return {t.row, t.first(), TileLane::kStep, t.active, threadIdx.y == 0, false};
  } else {
    const RowLane r;
    return {r.row, r.first(), RowLane::kStep, true, r.lane == 0, r.row >= v.N * v.C};
  }
}

__device__ __forceinline__ int64_t offset(const NCP& v, int64_t row) {
  return (row / v.C) * v.stride_n + (row % v.C) * v.stride_c;
}

// ---- softmax ----

// m and s of one row from this thread's pixels, reduced over the warp (kTile = false) or tile.
template <bool kTile, class T>
__device__ void softmax_stats(const T* xr, const NCP& v, acc_t<T> inv_t, int64_t first, int step, bool active,
                              acc_t<T>& m_out, acc_t<T>& s_out) {
  using A = acc_t<T>;
  NanMax<A> m;
  if (active) {
    for (int64_t p = first; p < v.P; p += step) m.add(A(xr[p * v.stride_p]) * inv_t);
  }
  if constexpr (kTile) {
    m = column_total(m, [](NanMax<A>& a, const NanMax<A>& b) { a.merge(b); });
  } else {
    m = cuda::warp_max(m);
  }
  const A mx = m.result();
  sum_t s = 0;
  if (active) {
    for (int64_t p = first; p < v.P; p += step) s += spatial_softmax2d::exp_acc(A(xr[p * v.stride_p]) * inv_t - mx);
  }
  s_out = A(kTile ? column_sum(s) : cuda::warp_sum(s));
  m_out = mx;
}

template <bool kTile, class T>
__global__ void softmax_forward(const T* __restrict__ x, NCP v, T* __restrict__ out, NCP o, double temperature,
                                acc_t<T>* row_max, acc_t<T>* row_sum) {
  using A = acc_t<T>;
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  const auto [row, first, step, active, leader, past_end] = lane_of<kTile>(v);
  if (past_end) return;
  const T* xr = x + offset(v, row);
  A m, s;
  softmax_stats<kTile>(xr, v, inv_t, first, step, active, m, s);
  if (!active) return;
  if (leader) {
    row_max[row] = m;
    row_sum[row] = s;
  }
  T* orow = out + offset(o, row);
  const A inv_s = A(1) / s;
  for (int64_t p = first; p < v.P; p += step) {
    orow[p * o.stride_p] = T(spatial_softmax2d::exp_acc(A(xr[p * v.stride_p]) * inv_t - m) * inv_s);
  }
}

template <bool kTile, class T>
__global__ void softmax_backward(const T* __restrict__ g, NCP gv, const T* __restrict__ x, NCP v,
                                 const acc_t<T>* __restrict__ row_max, const acc_t<T>* __restrict__ row_sum,
                                 T* __restrict__ gx, NCP o, double temperature) {
  using A = acc_t<T>;
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  const auto [row, first, step, active, leader, past_end] = lane_of<kTile>(v);
  if (past_end) return;
  const T* xr = x + offset(v, row);
  const T* gr = g + offset(gv, row);
  const A m = row_max[row], inv_s = A(1) / row_sum[row];
  sum_t partial = 0;
  if (active) {
    for (int64_t p = first; p < v.P; p += step) {
      partial += A(gr[p * gv.stride_p]) * spatial_softmax2d::exp_acc(A(xr[p * v.stride_p]) * inv_t - m) * inv_s;
    }
  }
  const A dot = A(kTile ? column_sum(partial) : cuda::warp_sum(partial));
  if (!active) return;
  T* grow = gx + offset(o, row);
  for (int64_t p = first; p < v.P; p += step) {
    const A y = spatial_softmax2d::exp_acc(A(xr[p * v.stride_p]) * inv_t - m) * inv_s;
    grow[p * o.stride_p] = T(inv_t * y * (A(gr[p * gv.stride_p]) - dot));
  }
}

// ---- soft-argmax ----

struct Grid2d {
  int64_t H, W;
  bool normalized;
  template <class A> __device__ A x(int64_t p) const { return spatial_softmax2d::coordinate<A>(p % W, W, normalized); }
  template <class A> __device__ A y(int64_t p) const { return spatial_softmax2d::coordinate<A>(p / W, H, normalized); }
};

template <bool kTile, class T>
__global__ void soft_argmax_forward(const T* __restrict__ x, NCP v, Grid2d grid, double temperature,
                                    acc_t<T>* out, acc_t<T>* row_max, acc_t<T>* row_sum) {
  using A = acc_t<T>;
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  const auto [row, first, step, active, leader, past_end] = lane_of<kTile>(v);
  if (past_end) return;
  const T* xr = x + offset(v, row);
  OnlineSums<A> acc;
  if (active) {
    for (int64_t p = first; p < v.P; p += step) {
      acc.add(A(xr[p * v.stride_p]) * inv_t, grid.x<A>(p), grid.y<A>(p));
    }
  }
  if constexpr (kTile) {
    acc = column_total(acc, [](OnlineSums<A>& a, const OnlineSums<A>& b) { a.merge(b); });
  } else {
    acc = warp_merge(acc);
  }
  if (active && leader) {
    const sum_t s = acc.sum();
    out[2 * row] = A(acc.sx / s);
    out[2 * row + 1] = A(acc.sy / s);
    row_max[row] = acc.m;
    row_sum[row] = A(s);
  }
}

template <bool kTile, class T>
__global__ void soft_argmax_backward(const acc_t<T>* __restrict__ g, const acc_t<T>* __restrict__ out,
                                     const T* __restrict__ x, NCP v, const acc_t<T>* __restrict__ row_max,
                                     const acc_t<T>* __restrict__ row_sum, T* __restrict__ gx, NCP o, Grid2d grid,
                                     double temperature) {
  using A = acc_t<T>;
  const A inv_t = spatial_softmax2d::inverse<A>(temperature);
  const auto [row, first, step, active, leader, past_end] = lane_of<kTile>(v);
  if (past_end || !active) return;  // nothing to reduce across lanes here
  const A g_x = g[2 * row], g_y = g[2 * row + 1];
  const A shared = spatial_softmax2d::expected_dot(g_x, g_y, out[2 * row], out[2 * row + 1]);
  const A m = row_max[row], k = inv_t / row_sum[row];
  const T* xr = x + offset(v, row);
  T* grow = gx + offset(o, row);
  for (int64_t p = first; p < v.P; p += step) {
    const A direction = g_x * grid.x<A>(p) + g_y * grid.y<A>(p) - shared;
    grow[p * o.stride_p] = T(k * spatial_softmax2d::exp_acc(A(xr[p * v.stride_p]) * inv_t - m) * direction);
  }
}

// ---- launchers ----

dim3 row_grid(const NCP& v) { return dim3(unsigned(cuda::ceil_div(v.N * v.C, kRowsPerBlock))); }
dim3 tile_grid(const NCP& v) { return dim3(unsigned(v.N * cuda::ceil_div(v.C, kTileC))); }
const dim3 kRowBlock(kRowsPerBlock * kWarp);
const dim3 kTileBlock(kTileC, kTileP);

// Launches kernel<true> on channel tiles or kernel<false> on rows.
#define CAMFAST_LAUNCH(kernel, T, tiles, v, stream, ...)                                  \
  do {                                                                                    \
    if (tiles) {                                                                          \
      kernel<true, T><<<tile_grid(v), kTileBlock, 0, stream>>>(__VA_ARGS__);              \
    } else {                                                                              \
      kernel<false, T><<<row_grid(v), kRowBlock, 0, stream>>>(__VA_ARGS__);               \
    }                                                                                     \
  } while (0)

std::tuple<Tensor, Tensor, Tensor> spatial_softmax2d_cuda(Tensor x, double temperature) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const auto io = spatial_softmax2d::prepare_softmax_forward(x, temperature);
  if (io.x.t.numel() == 0) return {io.out.t, io.stats.max, io.stats.sum};
  const NCP &v = io.x.v, &o = io.out.v;
  const cudaStream_t stream = cuda::current_stream(io.x.t);
  dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kSoftmax, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    CAMFAST_LAUNCH(softmax_forward, T, v.channels_inner(), v, stream, io.x.t.const_data_ptr<T>(), v,
                   io.out.t.mutable_data_ptr<T>(), o, temperature, io.stats.max.mutable_data_ptr<A>(),
                   io.stats.sum.mutable_data_ptr<A>());
  });
  cuda::check_launch(spatial_softmax2d::kSoftmax);
  return {io.out.t, io.stats.max, io.stats.sum};
}

Tensor spatial_softmax2d_backward_cuda(Tensor grad_out, Tensor x, Tensor row_max, Tensor row_sum, double temperature) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const auto io = spatial_softmax2d::prepare_softmax_backward(grad_out, x, row_max, row_sum, temperature);
  if (io.x.t.numel() == 0) return io.grad_x.t;
  const NCP &gv = io.grad_out.v, &v = io.x.v, &o = io.grad_x.v;
  const cudaStream_t stream = cuda::current_stream(io.x.t);
  dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kSoftmax, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    CAMFAST_LAUNCH(softmax_backward, T, v.channels_inner() && gv.channels_inner(), v, stream,
                   io.grad_out.t.const_data_ptr<T>(), gv, io.x.t.const_data_ptr<T>(), v,
                   io.stats.max.const_data_ptr<A>(), io.stats.sum.const_data_ptr<A>(),
                   io.grad_x.t.mutable_data_ptr<T>(), o, temperature);
  });
  cuda::check_launch(spatial_softmax2d::kSoftmax);
  return io.grad_x.t;
}

Grid2d grid_of(const Tensor& x, bool normalized) { return Grid2d{x.size(2), x.size(3), normalized}; }

std::tuple<Tensor, Tensor, Tensor> spatial_soft_argmax2d_cuda(Tensor x, double temperature, bool normalized) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const auto io = spatial_softmax2d::prepare_argmax_forward(x, temperature);
  if (io.x.t.numel() == 0) return {io.out, io.stats.max, io.stats.sum};
  const NCP& v = io.x.v;
  const cudaStream_t stream = cuda::current_stream(io.x.t);
  dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kArgmax, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    CAMFAST_LAUNCH(soft_argmax_forward, T, v.channels_inner(), v, stream, io.x.t.const_data_ptr<T>(), v,
                   grid_of(io.x.t, normalized), temperature, io.out.mutable_data_ptr<A>(),
                   io.stats.max.mutable_data_ptr<A>(), io.stats.sum.mutable_data_ptr<A>());
  });
  cuda::check_launch(spatial_softmax2d::kArgmax);
  return {io.out, io.stats.max, io.stats.sum};
}

Tensor spatial_soft_argmax2d_backward_cuda(Tensor grad_out, Tensor x, Tensor out, Tensor row_max, Tensor row_sum,
                                           double temperature, bool normalized) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const auto io = spatial_softmax2d::prepare_argmax_backward(grad_out, x, out, row_max, row_sum, temperature);
  if (io.x.t.numel() == 0) return io.grad_x.t;
  const NCP &v = io.x.v, &o = io.grad_x.v;
  const cudaStream_t stream = cuda::current_stream(io.x.t);
  dispatch_floating(io.x.t.scalar_type(), spatial_softmax2d::kArgmax, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    CAMFAST_LAUNCH(soft_argmax_backward, T, v.channels_inner(), v, stream, io.grad_out.const_data_ptr<A>(),
                   io.out.const_data_ptr<A>(), io.x.t.const_data_ptr<T>(), v, io.stats.max.const_data_ptr<A>(),
                   io.stats.sum.const_data_ptr<A>(), io.grad_x.t.mutable_data_ptr<T>(), o,
                   grid_of(io.x.t, normalized), temperature);
  });
  cuda::check_launch(spatial_softmax2d::kArgmax);
  return io.grad_x.t;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("spatial_softmax2d", TORCH_BOX(&spatial_softmax2d_cuda));
  m.impl("_spatial_softmax2d_backward", TORCH_BOX(&spatial_softmax2d_backward_cuda));
  m.impl("spatial_soft_argmax2d", TORCH_BOX(&spatial_soft_argmax2d_cuda));
  m.impl("_spatial_soft_argmax2d_backward", TORCH_BOX(&spatial_soft_argmax2d_backward_cuda));
}

}  // namespace camfast
