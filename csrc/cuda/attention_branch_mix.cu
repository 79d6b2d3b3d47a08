// ABN's attention mix (1 + m) * g on CUDA: forward and backward, NCHW and channels_last in place.
//
// One pixel kernel (PixelTile) serves both: it scales x by 1 + m at each pixel and, in the
// backward (x the incoming gradient), sums grad_m = sum_c x g over the same channels.
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

template <class T, bool kCI, bool kBackward>
__global__ void mix_pixels(const T* __restrict__ x, NCP xv, const T* __restrict__ m, NCP mv, T* __restrict__ out,
                           NCP o, const T* __restrict__ g, NCP gv, T* __restrict__ grad_m) {
  using A = acc_t<T>;
  const PixelTile<kCI> tile(xv.P);
  const bool active = tile.p < xv.P;
  A partial = A(0);
  if (active) {
    const A gain = abn::gain(A(m[tile.n * mv.sN + tile.p * mv.sP]));
    const T* xn = x + tile.n * xv.sN + tile.p * xv.sP;
    T* on = out + tile.n * o.sN + tile.p * o.sP;
    for (int64_t c = tile.c_first; c < xv.C; c += tile.kStep) {
      const A value = A(xn[c * xv.sC]);
      on[c * o.sC] = T(gain * value);
      if constexpr (kBackward) partial += value * A(g[tile.n * gv.sN + c * gv.sC + tile.p * gv.sP]);
    }
  }
  if constexpr (kBackward) {
    const A sum = tile.channel_sum(partial);
    if (active && tile.c_first == 0) grad_m[tile.n * xv.P + tile.p] = T(sum);
  }
}

// out = (1 + m) x; with g and grad_m also grad_m = sum_c x g.
template <class T>
void launch(const Tensor& x, const NCP& xv, const Tensor& m, const NCP& mv, const Tensor& out, const NCP& o,
            const Tensor* g, const NCP& gv, const Tensor* grad_m) {
  const cudaStream_t stream = cuda::current_stream(x);
  const T* xp = x.const_data_ptr<T>();
  const T* mp = m.const_data_ptr<T>();
  T* op = out.mutable_data_ptr<T>();
  if (g == nullptr) {
    if (xv.channels_inner()) {
      mix_pixels<T, true, false><<<PixelTile<true>::grid(xv), cuda::kTileBlock, 0, stream>>>(xp, xv, mp, mv, op, o, nullptr, gv, nullptr);
    } else {
      mix_pixels<T, false, false><<<PixelTile<false>::grid(xv), cuda::kTileBlock, 0, stream>>>(xp, xv, mp, mv, op, o, nullptr, gv, nullptr);
    }
    return;
  }
  const T* gp = g->const_data_ptr<T>();
  T* gmp = grad_m->mutable_data_ptr<T>();
  if (xv.channels_inner()) {
    mix_pixels<T, true, true><<<PixelTile<true>::grid(xv), cuda::kTileBlock, 0, stream>>>(xp, xv, mp, mv, op, o, gp, gv, gmp);
  } else {
    mix_pixels<T, false, true><<<PixelTile<false>::grid(xv), cuda::kTileBlock, 0, stream>>>(xp, xv, mp, mv, op, o, gp, gv, gmp);
  }
}

Tensor attention_branch_mix_cuda(Tensor g, Tensor m) {
  torch::stable::accelerator::DeviceGuard guard(g.get_device_index());
  const abn::ForwardIO io = abn::prepare_forward(g, m);
  if (io.g.numel() == 0) return io.out;
  dispatch_floating(io.g.scalar_type(), abn::kOp, [&](auto tag) {
    launch<decltype(tag)>(io.g, io.v, io.m, io.mv, io.out, io.o, nullptr, io.v, nullptr);
  });
  cuda::check_launch(abn::kOp);
  return io.out;
}

std::tuple<Tensor, Tensor> attention_branch_mix_backward_cuda(Tensor grad_out, Tensor g, Tensor m) {
  torch::stable::accelerator::DeviceGuard guard(g.get_device_index());
  const abn::BackwardIO io = abn::prepare_backward(grad_out, g, m);
  if (io.v.N * io.v.P == 0) return {io.grad_g, io.grad_m};
  dispatch_floating(io.g.scalar_type(), abn::kOp, [&](auto tag) {
    launch<decltype(tag)>(io.grad_out, io.d, io.m, io.mv, io.grad_g, io.o, &io.g, io.v, &io.grad_m);
  });
  cuda::check_launch(abn::kOp);
  return {io.grad_g, io.grad_m};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("attention_branch_mix", TORCH_BOX(&attention_branch_mix_cuda));
  m.impl("_attention_branch_mix_backward", TORCH_BOX(&attention_branch_mix_backward_cuda));
}

}  // namespace camfast
