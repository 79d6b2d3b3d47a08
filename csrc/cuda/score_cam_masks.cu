// Score-CAM masked inputs on CUDA. stats_kernel: one block per map reduces its extrema (over
// the upsampled map at the "upsampled" stage). masks_kernel: one thread per output pixel of a map
// computes the mask once and writes it times every image channel; consecutive threads take
// consecutive pixels, so the output, by far the largest tensor, is written coalesced, once.
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/score_cam_masks.cuh"
#include "../ops/score_cam_masks.h"
#include "cuda_utils.cuh"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cuda::kWarp;
using score_cam_masks::Extrema;
using score_cam_masks::MapStats;
using score_cam_masks::Tap;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;
constexpr int64_t kMaxBlocks = 1 << 20;  // masks_kernel strides over larger grids

template <class A> struct Geometry {
  score_cam_masks::ActView a;
  int64_t H, W;
  bool align_corners;
  A scale_h, scale_w;  // score_cam_masks::source_scale of each axis

  // Row y of map r's upsampled values at column x, each source tap mapped by s.source().
  template <class T>
  __device__ A upsampled(const T* __restrict__ m, int64_t y, int64_t x, const MapStats<A>& s) const {
    const Tap<A> ty = score_cam_masks::linear_tap<A>(a.h, H, scale_h, align_corners, y);
    const Tap<A> tx = score_cam_masks::linear_tap<A>(a.w, W, scale_w, align_corners, x);
    const auto at = [&](int64_t i, int64_t j) { return s.source(A(m[i * a.stride_h + j * a.stride_w])); };
    return score_cam_masks::lerp(score_cam_masks::lerp(at(ty.i0, tx.i0), at(ty.i0, tx.i1), tx),
                     score_cam_masks::lerp(at(ty.i1, tx.i0), at(ty.i1, tx.i1), tx), ty);
  }

  template <class T> __device__ const T* map(const T* act, int64_t r) const {
    return act + (r / a.K) * a.stride_n + (r % a.K) * a.stride_k;
  }
};

template <class A> __device__ Extrema<A> block_extrema(Extrema<A> e) {
  __shared__ Extrema<A> partial[kWarps];
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    Extrema<A> other;
    other.lo = __shfl_xor_sync(0xffffffffu, e.lo, offset);
    other.hi = __shfl_xor_sync(0xffffffffu, e.hi, offset);
    other.has_nan = __shfl_xor_sync(0xffffffffu, int(e.has_nan), offset) != 0;
    e.merge(other);
  }
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = e;
  __syncthreads();
  Extrema<A> all;
  for (int i = 0; i < kWarps; ++i) all.merge(partial[i]);
  __syncthreads();  // partial is reused by the next reduction
  return all;
}

template <class T, class A = acc_t<T>>
__global__ void __launch_bounds__(kThreads)
stats_kernel(const T* __restrict__ act, Geometry<A> g, bool feature, MapStats<A>* stats, bool* constant) {
  const int64_t r = blockIdx.x;
  const T* m = g.map(act, r);
  // A warp per row, a lane per column: no 64-bit division (a call that spills) per element.
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  Extrema<A> e;
  for (int64_t i = warp; i < g.a.h; i += kWarps) {
    for (int64_t j = lane; j < g.a.w; j += kWarp) e.add(A(m[i * g.a.stride_h + j * g.a.stride_w]));
  }
  MapStats<A> s = score_cam_masks::source_stats(block_extrema(e), feature);
  if (!feature && !s.constant) {  // the same branch for the whole block
    Extrema<A> u;
    for (int64_t y = warp; y < g.H; y += kWarps) {
      for (int64_t x = lane; x < g.W; x += kWarp) u.add(g.upsampled(m, y, x, s));
    }
    score_cam_masks::with_upsampled(s, block_extrema(u));
  }
  if (threadIdx.x == 0) {
    stats[r] = s;
    constant[r] = s.constant;
  }
}

template <class T, class A = acc_t<T>>
__global__ void __launch_bounds__(kThreads)
masks_kernel(const T* __restrict__ act, const T* __restrict__ image, NCP img, Geometry<A> g,
             const MapStats<A>* __restrict__ stats, T* __restrict__ out) {
  const int64_t P = g.H * g.W;
  const int64_t tiles = cuda::ceil_div(P, kThreads);
  for (int64_t task = blockIdx.x; task < g.a.N * g.a.K * tiles; task += gridDim.x) {
    const int64_t r = task / tiles, p = (task % tiles) * kThreads + threadIdx.x;
    if (p >= P) continue;
    const MapStats<A> s = stats[r];
    const A mask = s.mask(g.upsampled(g.map(act, r), p / g.W, p % g.W, s));
    const T* in = image + (r / g.a.K) * img.stride_n + p * img.stride_p;
    T* o = out + r * img.C * P + p;
    for (int64_t c = 0; c < img.C; ++c) o[c * P] = T(mask * A(in[c * img.stride_c]));
  }
}

std::tuple<Tensor, Tensor> score_cam_masks_cuda(Tensor act, Tensor image, bool align_corners, bool normalize_feature) {
  torch::stable::accelerator::DeviceGuard guard(act.get_device_index());
  const score_cam_masks::IO io = score_cam_masks::prepare(act, image);
  const int64_t maps = io.maps();
  if (maps == 0) return {io.out, io.constant};
  const cudaStream_t stream = cuda::current_stream(io.act);
  dispatch_floating(io.act.scalar_type(), score_cam_masks::kOp, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const Geometry<A> g{io.a, io.H, io.W, align_corners, score_cam_masks::source_scale<A>(io.a.h, io.H, align_corners),
                        score_cam_masks::source_scale<A>(io.a.w, io.W, align_corners)};
    // Per-map statistics as raw bytes: MapStats<A> is a plain struct of four A and a flag.
    Tensor stats = torch::stable::new_empty(io.act, {maps * int64_t(sizeof(MapStats<A>))}, ScalarType::Byte);
    auto* stats_ptr = reinterpret_cast<MapStats<A>*>(stats.mutable_data_ptr<uint8_t>());
    const T* act_ptr = io.act.const_data_ptr<T>();
    stats_kernel<T><<<unsigned(maps), kThreads, 0, stream>>>(act_ptr, g, normalize_feature, stats_ptr,
                                                             io.constant.mutable_data_ptr<bool>());
    // An image of no pixels has no masks to write (and a grid of 0 blocks is a launch error).
    const int64_t blocks = std::min(kMaxBlocks, maps * cuda::ceil_div(io.H * io.W, kThreads));
    if (blocks == 0) return;
    masks_kernel<T><<<unsigned(blocks), kThreads, 0, stream>>>(act_ptr, io.image.const_data_ptr<T>(), io.img, g,
                                                               stats_ptr, io.out.mutable_data_ptr<T>());
  });
  cuda::check_launch(score_cam_masks::kOp);
  return {io.out, io.constant};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("score_cam_masks", TORCH_BOX(&score_cam_masks_cuda));
}

}  // namespace camfast
