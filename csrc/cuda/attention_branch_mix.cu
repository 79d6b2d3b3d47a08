// ABN's attention mix (1 + m) * g on CUDA: forward and backward, NCHW and channels_last in place.
//
// One pixel kernel (PixelTile) serves both: it scales its input by 1 + m at each pixel (the
// features g forward, the incoming gradient backward) and, in the backward, also sums
// grad_m = sum_c grad features over the same channels.
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/attention_branch_mix.cuh"
#include "../ops/attention_branch_mix.h"
#include "pixel_tiles.cuh"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cuda::PixelTile;

template <class T, bool kChannelsInner, bool kBackward>
__global__ void mix_pixels(const T* __restrict__ in, NCP iv, const T* __restrict__ m, NCP mv, T* __restrict__ out,
                           NCP o, const T* __restrict__ features, NCP fv, T* __restrict__ grad_m) {
  using A = acc_t<T>;
  const PixelTile<kChannelsInner> tile(iv.P);
  const bool active = tile.p < iv.P;
  sum_t partial = 0;
  if (active) {
    const A gain = attention_branch_mix::gain(A(m[tile.n * mv.stride_n + tile.p * mv.stride_p]));
    const T* in_pixel = in + tile.n * iv.stride_n + tile.p * iv.stride_p;
    T* out_pixel = out + tile.n * o.stride_n + tile.p * o.stride_p;
    for (int64_t c = tile.c_first; c < iv.C; c += tile.kStep) {
      const A value = A(in_pixel[c * iv.stride_c]);
      out_pixel[c * o.stride_c] = T(gain * value);
      if constexpr (kBackward) {
        partial += value * A(features[tile.n * fv.stride_n + c * fv.stride_c + tile.p * fv.stride_p]);
      }
    }
  }
  if constexpr (kBackward) {
    const sum_t sum = tile.channel_sum(partial);
    if (active && tile.c_first == 0) grad_m[tile.n * iv.P + tile.p] = T(sum);
  }
}

// out = (1 + m) in; with features and grad_m also grad_m = sum_c in features.
template <class T>
void launch(const Tensor& in, const NCP& iv, const Tensor& m, const NCP& mv, const Tensor& out, const NCP& o,
            const Tensor* features, const NCP& fv, const Tensor* grad_m) {
  const cudaStream_t stream = cuda::current_stream(in);
  const T* in_ptr = in.const_data_ptr<T>();
  const T* m_ptr = m.const_data_ptr<T>();
  T* out_ptr = out.mutable_data_ptr<T>();
  if (features == nullptr) {
    if (iv.channels_inner()) {
      mix_pixels<T, true, false><<<PixelTile<true>::grid(iv), cuda::kTileBlock, 0, stream>>>(
          in_ptr, iv, m_ptr, mv, out_ptr, o, nullptr, fv, nullptr);
    } else {
      mix_pixels<T, false, false><<<PixelTile<false>::grid(iv), cuda::kTileBlock, 0, stream>>>(
          in_ptr, iv, m_ptr, mv, out_ptr, o, nullptr, fv, nullptr);
    }
    return;
  }
  const T* features_ptr = features->const_data_ptr<T>();
  T* grad_m_ptr = grad_m->mutable_data_ptr<T>();
  if (iv.channels_inner()) {
    mix_pixels<T, true, true><<<PixelTile<true>::grid(iv), cuda::kTileBlock, 0, stream>>>(
        in_ptr, iv, m_ptr, mv, out_ptr, o, features_ptr, fv, grad_m_ptr);
  } else {
    mix_pixels<T, false, true><<<PixelTile<false>::grid(iv), cuda::kTileBlock, 0, stream>>>(
        in_ptr, iv, m_ptr, mv, out_ptr, o, features_ptr, fv, grad_m_ptr);
  }
}

Tensor attention_branch_mix_cuda(Tensor g, Tensor m) {
  torch::stable::accelerator::DeviceGuard guard(g.get_device_index());
  const attention_branch_mix::ForwardIO io = attention_branch_mix::prepare_forward(g, m);
  if (io.features.numel() == 0) return io.out;
  dispatch_floating(io.features.scalar_type(), attention_branch_mix::kOp, [&](auto tag) {
    launch<decltype(tag)>(io.features, io.v, io.m, io.mv, io.out, io.o, nullptr, io.v, nullptr);
  });
  cuda::check_launch(attention_branch_mix::kOp);
  return io.out;
}

std::tuple<Tensor, Tensor> attention_branch_mix_backward_cuda(Tensor grad_out, Tensor g, Tensor m) {
  torch::stable::accelerator::DeviceGuard guard(g.get_device_index());
  const attention_branch_mix::BackwardIO io = attention_branch_mix::prepare_backward(grad_out, g, m);
  if (io.v.N * io.v.P == 0) return {io.grad_features, io.grad_m};
  dispatch_floating(io.features.scalar_type(), attention_branch_mix::kOp, [&](auto tag) {
    launch<decltype(tag)>(io.grad_out, io.g, io.m, io.mv, io.grad_features, io.o, &io.features, io.v, &io.grad_m);
  });
  cuda::check_launch(attention_branch_mix::kOp);
  return {io.grad_features, io.grad_m};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("attention_branch_mix", TORCH_BOX(&attention_branch_mix_cuda));
  m.impl("_attention_branch_mix_backward", TORCH_BOX(&attention_branch_mix_backward_cuda));
}

}  // namespace camfast
