// GGAM channel-spatial attention on CUDA: forward and backward, NCHW and channels_last in place.
//
// Pixel kernels (PixelTile) sum over the channels of each pixel: z for the forward, r = sum_c g a
// for the backward. With the sigmoid the forward then writes out = a * t for its pixels at once;
// the softmax needs every z of a sample, so a per-sample kernel and a second pixel pass follow.
// The backward ends with a channel kernel (ChannelTile): grad_a, and grad_s summed over pixels.
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/channel_spatial_attention.cuh"
#include "../ops/channel_spatial_attention.h"
#include "pixel_tiles.cuh"

namespace camfast {
namespace {

using torch::stable::Tensor;
using channel_spatial_attention::Weights;
using cuda::ChannelTile;
using cuda::PixelTile;

// What a forward pixel pass does.
enum class Pass { sums, sigmoid_and_scale, scale };

template <class T, bool kChannelsInner, Pass kPass>
__global__ void forward_pixels(const T* __restrict__ a, NCP v, const T* __restrict__ s, Weights w,
                               acc_t<T>* __restrict__ t, T* __restrict__ out, NCP o) {
  using A = acc_t<T>;
  const PixelTile<kChannelsInner> tile(v.P);
  const bool active = tile.p < v.P;
  const T* an = a + tile.n * v.stride_n + tile.p * v.stride_p;
  A* t_pixel = t + tile.n * v.P + tile.p;
  A scale;
  if constexpr (kPass == Pass::scale) {
    if (!active) return;
    scale = *t_pixel;
  } else {
    const T* sn = s + tile.n * w.stride_n;
    sum_t partial = 0;
    if (active) {
      for (int64_t c = tile.c_first; c < v.C; c += tile.kStep) {
        partial += A(sn[c * w.stride_c]) * A(an[c * v.stride_c]);
      }
    }
    const A z = A(tile.channel_sum(partial));
    if (!active) return;
    if constexpr (kPass == Pass::sums) {
      if (tile.c_first == 0) *t_pixel = z;
      return;
    }
    scale = sigmoid(z);
    if (tile.c_first == 0) *t_pixel = scale;
  }
  T* on = out + tile.n * o.stride_n + tile.p * o.stride_p;
  for (int64_t c = tile.c_first; c < v.C; c += tile.kStep) on[c * o.stride_c] = T(A(an[c * v.stride_c]) * scale);
}

// r = sum_c g a per pixel, stored as u: under the sigmoid u = r (1 - t) t at once.
template <class T, bool kChannelsInner, bool kSigmoid>
__global__ void backward_pixels(const T* __restrict__ g, NCP gv, const T* __restrict__ a, NCP v,
                                const acc_t<T>* __restrict__ t, acc_t<T>* __restrict__ u) {
  using A = acc_t<T>;
  const PixelTile<kChannelsInner> tile(v.P);
  const bool active = tile.p < v.P;
  sum_t partial = 0;
  if (active) {
    const T* an = a + tile.n * v.stride_n + tile.p * v.stride_p;
    const T* gn = g + tile.n * gv.stride_n + tile.p * gv.stride_p;
    for (int64_t c = tile.c_first; c < v.C; c += tile.kStep) partial += A(gn[c * gv.stride_c]) * A(an[c * v.stride_c]);
  }
  const A r = A(tile.channel_sum(partial));
  if (!active || tile.c_first != 0) return;
  const int64_t i = tile.n * v.P + tile.p;
  u[i] = kSigmoid ? channel_spatial_attention::sigmoid_grad(t[i], r) : r;
}

// One block per sample: t := softmax(t) over the sample's map (t holds z).
template <class A> __global__ void softmax_maps(A* t, int64_t P) {
  const int tid = threadIdx.y * cuda::kLanes + threadIdx.x;
  const int threads = cuda::kLanes * cuda::kGroups;
  A* tn = t + int64_t(blockIdx.x) * P;
  NanMax<A> m;
  for (int64_t p = tid; p < P; p += threads) m.add(tn[p]);
  const A top = cuda::block_max(m);
  sum_t partial = 0;
  for (int64_t p = tid; p < P; p += threads) partial += exp(tn[p] - top);
  const A total = A(cuda::block_sum(partial));
  for (int64_t p = tid; p < P; p += threads) tn[p] = exp(tn[p] - top) / total;
}

// One block per sample: u := t (u - sum_p t u), the softmax's backward (u holds r). u is computed
// in double from the unrounded sum and rounded once: u sums to 0 over the map, so grad_s = sum u a
// cancels, and a sum rounded to float would shift every u alike.
template <class A> __global__ void softmax_grad_maps(const A* __restrict__ t, A* __restrict__ u, int64_t P) {
  const int tid = threadIdx.y * cuda::kLanes + threadIdx.x;
  const int threads = cuda::kLanes * cuda::kGroups;
  const A* tn = t + int64_t(blockIdx.x) * P;
  A* un = u + int64_t(blockIdx.x) * P;
  sum_t partial = 0;
  for (int64_t p = tid; p < P; p += threads) partial += tn[p] * un[p];
  const sum_t sum_tr = cuda::block_sum(partial);
  for (int64_t p = tid; p < P; p += threads) {
    un[p] = A(channel_spatial_attention::softmax_grad(sum_t(tn[p]), sum_t(un[p]), sum_tr));
  }
}

template <class T, bool kChannelsInner>
__global__ void input_grads(const T* __restrict__ g, NCP gv, const T* __restrict__ a, NCP v,
                            const T* __restrict__ s, Weights w, const acc_t<T>* __restrict__ t,
                            const acc_t<T>* __restrict__ u, T* __restrict__ grad_a, NCP o, T* __restrict__ grad_s) {
  using A = acc_t<T>;
  const ChannelTile<kChannelsInner> tile(v.C);
  const bool active = tile.c < v.C;
  sum_t partial = 0;
  if (active) {
    const A sc = A(s[tile.n * w.stride_n + tile.c * w.stride_c]);
    const T* an = a + tile.n * v.stride_n + tile.c * v.stride_c;
    const T* gn = g + tile.n * gv.stride_n + tile.c * gv.stride_c;
    T* on = grad_a + tile.n * o.stride_n + tile.c * o.stride_c;
    const A* tn = t + tile.n * v.P;
    const A* un = u + tile.n * v.P;
    for (int64_t p = tile.p_first; p < v.P; p += tile.kStep) {
      on[p * o.stride_p] = T(channel_spatial_attention::input_grad(A(gn[p * gv.stride_p]), tn[p], sc, un[p]));
      partial += un[p] * A(an[p * v.stride_p]);
    }
  }
  const sum_t sum = tile.pixel_sum(partial);
  if (active && tile.p_first == 0) grad_s[tile.n * v.C + tile.c] = T(sum);
}

const dim3 kSampleBlock(cuda::kLanes, cuda::kGroups);

template <class T, bool kChannelsInner>
void launch_forward(const channel_spatial_attention::ForwardIO& io, bool softmax, cudaStream_t stream) {
  using A = acc_t<T>;
  const T* a_ptr = io.a.const_data_ptr<T>();
  const T* s_ptr = io.s.const_data_ptr<T>();
  A* t_ptr = io.t.mutable_data_ptr<A>();
  T* out_ptr = io.out.mutable_data_ptr<T>();
  const dim3 grid = PixelTile<kChannelsInner>::grid(io.v);
  if (!softmax) {
    forward_pixels<T, kChannelsInner, Pass::sigmoid_and_scale>
        <<<grid, cuda::kTileBlock, 0, stream>>>(a_ptr, io.v, s_ptr, io.w, t_ptr, out_ptr, io.o);
    return;
  }
  forward_pixels<T, kChannelsInner, Pass::sums>
      <<<grid, cuda::kTileBlock, 0, stream>>>(a_ptr, io.v, s_ptr, io.w, t_ptr, out_ptr, io.o);
  softmax_maps<A><<<unsigned(io.v.N), kSampleBlock, 0, stream>>>(t_ptr, io.v.P);
  forward_pixels<T, kChannelsInner, Pass::scale>
      <<<grid, cuda::kTileBlock, 0, stream>>>(a_ptr, io.v, s_ptr, io.w, t_ptr, out_ptr, io.o);
}

template <class T, bool kChannelsInner>
void launch_backward(const channel_spatial_attention::BackwardIO& io, const Tensor& u, bool softmax,
                     cudaStream_t stream) {
  using A = acc_t<T>;
  const T* grad_out_ptr = io.grad_out.const_data_ptr<T>();
  const T* a_ptr = io.a.const_data_ptr<T>();
  const A* t_ptr = io.t.const_data_ptr<A>();
  A* u_ptr = u.mutable_data_ptr<A>();
  const dim3 pixels = PixelTile<kChannelsInner>::grid(io.v);
  if (softmax) {
    backward_pixels<T, kChannelsInner, false>
        <<<pixels, cuda::kTileBlock, 0, stream>>>(grad_out_ptr, io.g, a_ptr, io.v, t_ptr, u_ptr);
    softmax_grad_maps<A><<<unsigned(io.v.N), kSampleBlock, 0, stream>>>(t_ptr, u_ptr, io.v.P);
  } else {
    backward_pixels<T, kChannelsInner, true>
        <<<pixels, cuda::kTileBlock, 0, stream>>>(grad_out_ptr, io.g, a_ptr, io.v, t_ptr, u_ptr);
  }
  input_grads<T, kChannelsInner><<<ChannelTile<kChannelsInner>::grid(io.v), cuda::kTileBlock, 0, stream>>>(
      grad_out_ptr, io.g, a_ptr, io.v, io.s.const_data_ptr<T>(), io.w, t_ptr, u_ptr, io.grad_a.mutable_data_ptr<T>(),
      io.o, io.grad_s.mutable_data_ptr<T>());
}

std::tuple<Tensor, Tensor> channel_spatial_attention_cuda(Tensor a, Tensor s, bool softmax) {
  torch::stable::accelerator::DeviceGuard guard(a.get_device_index());
  const channel_spatial_attention::ForwardIO io = channel_spatial_attention::prepare_forward(a, s);
  if (io.v.N * io.v.P == 0) return {io.out, io.t};
  const cudaStream_t stream = cuda::current_stream(io.a);
  dispatch_floating(io.a.scalar_type(), channel_spatial_attention::kOp, [&](auto tag) {
    using T = decltype(tag);
    if (io.v.channels_inner() && io.o.channels_inner()) {
      launch_forward<T, true>(io, softmax, stream);
    } else {
      launch_forward<T, false>(io, softmax, stream);
    }
  });
  cuda::check_launch(channel_spatial_attention::kOp);
  return {io.out, io.t};
}

std::tuple<Tensor, Tensor> channel_spatial_attention_backward_cuda(Tensor grad_out, Tensor a, Tensor s, Tensor t,
                                                                   bool softmax) {
  torch::stable::accelerator::DeviceGuard guard(a.get_device_index());
  const channel_spatial_attention::BackwardIO io = channel_spatial_attention::prepare_backward(grad_out, a, s, t);
  if (io.v.N * io.v.P == 0) return {io.grad_a, io.grad_s};
  const cudaStream_t stream = cuda::current_stream(io.a);
  // u: the gradient of z per pixel (scratch); the softmax backward overwrites r with it in place.
  const Tensor u = torch::stable::empty_like(io.t);
  dispatch_floating(io.a.scalar_type(), channel_spatial_attention::kOp, [&](auto tag) {
    using T = decltype(tag);
    if (io.v.channels_inner()) {
      launch_backward<T, true>(io, u, softmax, stream);
    } else {
      launch_backward<T, false>(io, u, softmax, stream);
    }
  });
  cuda::check_launch(channel_spatial_attention::kOp);
  return {io.grad_a, io.grad_s};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("channel_spatial_attention", TORCH_BOX(&channel_spatial_attention_cuda));
  m.impl("_channel_spatial_attention_backward", TORCH_BOX(&channel_spatial_attention_backward_cuda));
}

}  // namespace camfast
