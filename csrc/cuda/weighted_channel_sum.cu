// The gradient CAM methods' raw map on CUDA, NCHW and channels_last in place. An image is
// (class t, sample n) of grad [T, N, K, h, w]; the tiles' sample index runs over images.
//
// weights_kernel (weighted methods, ChannelTile): a block per image and tile of channels sums each
// channel's map and writes its weight. map_kernel (PixelTile): a block per image and tile of
// pixels; each thread sums its share of the channels, the tile adds the shares (a blocked sum)
// and writes the ReLU. Sums are in double (sum_t), each thread's share and the tile's; the
// weights are stored in acc_t (float for float, half and bfloat16).
#include <string>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/weighted_channel_sum.cuh"
#include "../ops/weighted_channel_sum.h"
#include "pixel_tiles.cuh"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cuda::ChannelTile;
using cuda::PixelTile;
using weighted_channel_sum::Method;

// Where image i's maps start in act and grad.
struct Images {
  NCP a, g;          // act and one class of grad as [N, K, P]
  int64_t stride_t;  // between classes of grad

  __device__ int64_t act_offset(int64_t i) const { return (i % a.N) * a.stride_n; }
  __device__ int64_t grad_offset(int64_t i) const { return (i / a.N) * stride_t + (i % a.N) * g.stride_n; }
};

// The tiles' grid runs over images x tiles: their sample count is the image count.
NCP over_images(const weighted_channel_sum::IO& io) {
  NCP v = io.a;
  v.N = io.images();
  return v;
}

template <class T, Method M, bool kChannelsInner, class A = acc_t<T>>
__global__ void __launch_bounds__(cuda::kLanes * cuda::kGroups)
weights_kernel(const T* __restrict__ act, const T* __restrict__ grad, Images im, sum_t eps, A* __restrict__ w) {
  const NCP &a = im.a, &g = im.g;
  const ChannelTile<kChannelsInner> tile(a.C);
  const bool active = tile.c < a.C;
  const T* ak = act + im.act_offset(tile.n) + tile.c * a.stride_c;
  const T* gk = grad + im.grad_offset(tile.n) + tile.c * g.stride_c;
  A s = A(0);  // the channel's sum of A, for Grad-CAM++'s alphas
  if constexpr (weighted_channel_sum::needs_s(M)) {
    sum_t partial = 0;
    if (active) {
      for (int64_t p = tile.p_first; p < a.P; p += tile.kStep) partial += A(ak[p * a.stride_p]);
    }
    s = A(tile.pixel_sum(partial));
  }
  sum_t num = 0, den = 0;
  if (active) {
    for (int64_t p = tile.p_first; p < a.P; p += tile.kStep) {
      const A gv = A(gk[p * g.stride_p]);
      const A av = M == Method::grad_cam ? A(0) : A(ak[p * a.stride_p]);  // Grad-CAM's weight reads g alone
      num += weighted_channel_sum::numerator<M>(gv, av, s);
      if constexpr (weighted_channel_sum::needs_den(M)) den += weighted_channel_sum::denominator<M>(gv, av, s);
    }
  }
  num = tile.pixel_sum(num);
  if constexpr (weighted_channel_sum::needs_den(M)) den = tile.pixel_sum(den);
  if (active && tile.p_first == 0) w[tile.n * a.C + tile.c] = A(weighted_channel_sum::weight<M>(num, den, a.P, eps));
}

template <class T, Method M, bool kChannelsInner, class A = acc_t<T>>
__global__ void __launch_bounds__(cuda::kLanes * cuda::kGroups)
map_kernel(const T* __restrict__ act, const T* __restrict__ grad, Images im, const A* __restrict__ w,
           T* __restrict__ out) {
  const NCP &a = im.a, &g = im.g;
  const PixelTile<kChannelsInner> tile(a.P);
  const bool active = tile.p < a.P;
  sum_t partial = 0;
  if (active) {
    const T* ap = act + im.act_offset(tile.n) + tile.p * a.stride_p;
    if constexpr (weighted_channel_sum::weighted(M)) {
      const A* wi = w + tile.n * a.C;
      for (int64_t c = tile.c_first; c < a.C; c += tile.kStep) partial += wi[c] * A(ap[c * a.stride_c]);
    } else {
      const T* gp = grad + im.grad_offset(tile.n) + tile.p * g.stride_p;
      for (int64_t c = tile.c_first; c < a.C; c += tile.kStep) {
        partial += weighted_channel_sum::term<M>(A(gp[c * g.stride_c]), A(ap[c * a.stride_c]));
      }
    }
  }
  const sum_t sum = tile.channel_sum(partial);
  if (active && tile.c_first == 0) out[tile.n * a.P + tile.p] = T(weighted_channel_sum::relu(sum));
}

template <class T, Method M, bool kChannelsInner>
void launch(const weighted_channel_sum::IO& io, double eps, cudaStream_t stream) {
  using A = acc_t<T>;
  const Images im{io.a, io.g, io.stride_t};
  const NCP images = over_images(io);
  const T* act = io.act.const_data_ptr<T>();
  const T* grad = io.grad.const_data_ptr<T>();
  const A* w_ptr = nullptr;
  Tensor w;
  if constexpr (weighted_channel_sum::weighted(M)) {
    w = torch::stable::new_empty(io.act, {images.N, images.C}, acc_scalar_type(io.act.scalar_type()));
    w_ptr = w.const_data_ptr<A>();
    if (images.C > 0) {
      weights_kernel<T, M, kChannelsInner><<<ChannelTile<kChannelsInner>::grid(images), cuda::kTileBlock, 0, stream>>>(
          act, grad, im, eps, w.mutable_data_ptr<A>());
    }
  }
  map_kernel<T, M, kChannelsInner><<<PixelTile<kChannelsInner>::grid(images), cuda::kTileBlock, 0, stream>>>(
      act, grad, im, w_ptr, io.out.mutable_data_ptr<T>());
}

Tensor weighted_channel_sum_cuda(Tensor act, Tensor grad, std::string method, double eps) {
  torch::stable::accelerator::DeviceGuard guard(act.get_device_index());
  const weighted_channel_sum::IO io = weighted_channel_sum::prepare(act, grad, method, eps);
  if (io.images() == 0) return io.out;
  const cudaStream_t stream = cuda::current_stream(io.act);
  dispatch_floating(io.act.scalar_type(), weighted_channel_sum::kOp, [&](auto tag) {
    using T = decltype(tag);
    weighted_channel_sum::dispatch_method(io.method, [&](auto m) {
      constexpr Method M = decltype(m)::value;
      if (io.a.channels_inner()) {
        launch<T, M, true>(io, eps, stream);
      } else {
        launch<T, M, false>(io, eps, stream);
      }
    });
  });
  cuda::check_launch(weighted_channel_sum::kOp);
  return io.out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("weighted_channel_sum", TORCH_BOX(&weighted_channel_sum_cuda));
}

}  // namespace camfast
