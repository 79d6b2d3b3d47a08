// ABN's attention mix (1 + m) * g on the CPU: forward and backward, NCHW and channels_last in place.
//
// Forward and backward are one sweep each over blocks of pixels; the backward writes the features'
// gradient and sums grad_m = sum_c d features in the same loop (d: the incoming gradient).
#include <tuple>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/attention_branch_mix.cuh"
#include "../ops/attention_branch_mix.h"
#include "loops.h"
#include "planes.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cpu::Unit;

// (1 + m) over the pixels [p0, p1) of sample n.
template <class T> std::vector<acc_t<T>> gains(const T* m, const NCP& mv, int64_t n, int64_t p0, int64_t p1) {
  std::vector<acc_t<T>> out(p1 - p0);
  for (int64_t p = p0; p < p1; ++p) {
    out[p - p0] = attention_branch_mix::gain(acc_t<T>(m[n * mv.stride_n + p * mv.stride_p]));
  }
  return out;
}

template <class T> void forward(const attention_branch_mix::ForwardIO& io) {
  using A = acc_t<T>;
  const NCP &v = io.v, &o = io.o;
  const T* features_ptr = io.features.const_data_ptr<T>();
  const T* m_ptr = io.m.const_data_ptr<T>();
  T* out_ptr = io.out.mutable_data_ptr<T>();
  cpu::dispatch_unit(cpu::unit_axis({v, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    cpu::parallel_pixel_blocks(v, cpu::pixels_per_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      const std::vector<A> gain = gains(m_ptr, io.mv, n, p0, p1);
      const auto features = cpu::plane<U>(features_ptr, v, n);
      const auto out = cpu::plane<U>(out_ptr, o, n);
      cpu::for_each_in_block<U>(v, p0, p1, [&](int64_t c, int64_t p) {
        out(c, p) = T(gain[p - p0] * A(features(c, p)));
      });
    });
  });
}

template <class T> void backward(const attention_branch_mix::BackwardIO& io) {
  using A = acc_t<T>;
  const NCP &v = io.v, &gv = io.g, &o = io.o;
  const T* grad_out_ptr = io.grad_out.const_data_ptr<T>();
  const T* features_ptr = io.features.const_data_ptr<T>();
  const T* m_ptr = io.m.const_data_ptr<T>();
  T* grad_features_ptr = io.grad_features.mutable_data_ptr<T>();
  T* grad_m_ptr = io.grad_m.mutable_data_ptr<T>();
  cpu::dispatch_unit(cpu::unit_axis({v, gv, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    cpu::parallel_pixel_blocks(v, cpu::pixels_per_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      const std::vector<A> gain = gains(m_ptr, io.mv, n, p0, p1);
      const auto features = cpu::plane<U>(features_ptr, v, n);
      const auto grad = cpu::plane<U>(grad_out_ptr, gv, n);
      const auto grad_features = cpu::plane<U>(grad_features_ptr, o, n);
      std::vector<sum_t> grad_m(p1 - p0);
      cpu::channel_sums<U>(v, p0, p1, grad_m.data(), [&](int64_t c, int64_t p) {
        const A d = A(grad(c, p));
        grad_features(c, p) = T(gain[p - p0] * d);
        return d * A(features(c, p));
      });
      for (int64_t p = p0; p < p1; ++p) grad_m_ptr[n * v.P + p] = T(grad_m[p - p0]);
    });
  });
}

Tensor attention_branch_mix_cpu(Tensor g, Tensor m) {
  const attention_branch_mix::ForwardIO io = attention_branch_mix::prepare_forward(g, m);
  if (io.features.numel() > 0) {
    dispatch_floating(io.features.scalar_type(), attention_branch_mix::kOp,
                      [&](auto tag) { forward<decltype(tag)>(io); });
  }
  return io.out;
}

std::tuple<Tensor, Tensor> attention_branch_mix_backward_cpu(Tensor grad_out, Tensor g, Tensor m) {
  const attention_branch_mix::BackwardIO io = attention_branch_mix::prepare_backward(grad_out, g, m);
  if (io.v.N * io.v.P > 0) {
    dispatch_floating(io.features.scalar_type(), attention_branch_mix::kOp,
                      [&](auto tag) { backward<decltype(tag)>(io); });
  }
  return {io.grad_features, io.grad_m};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("attention_branch_mix", TORCH_BOX(&attention_branch_mix_cpu));
  m.impl("_attention_branch_mix_backward", TORCH_BOX(&attention_branch_mix_backward_cpu));
}

}  // namespace camfast
