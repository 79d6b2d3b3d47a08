// ABN's attention mix (1 + m) * g on the CPU: forward and backward, NCHW and channels_last in place.
//
// Forward and backward are one sweep each over blocks of pixels; the backward writes grad_g and
// sums grad_m = sum_c d g in the same loop.
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
  for (int64_t p = p0; p < p1; ++p) out[p - p0] = abn::gain(acc_t<T>(m[n * mv.sN + p * mv.sP]));
  return out;
}

template <class T> void forward(const abn::ForwardIO& io) {
  using A = acc_t<T>;
  const NCP &v = io.v, &o = io.o;
  const T* gp = io.g.const_data_ptr<T>();
  const T* mp = io.m.const_data_ptr<T>();
  T* op = io.out.mutable_data_ptr<T>();
  cpu::dispatch_unit(cpu::unit_axis({v, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    cpu::parallel_pixel_blocks(v, cpu::pixels_per_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      const std::vector<A> k = gains(mp, io.mv, n, p0, p1);
      const auto g = cpu::plane<U>(gp, v, n);
      const auto out = cpu::plane<U>(op, o, n);
      cpu::for_each_in_block<U>(v, p0, p1, [&](int64_t c, int64_t p) { out(c, p) = T(k[p - p0] * A(g(c, p))); });
    });
  });
}

template <class T> void backward(const abn::BackwardIO& io) {
  using A = acc_t<T>;
  const NCP &v = io.v, &dv = io.d, &o = io.o;
  const T* dp = io.grad_out.const_data_ptr<T>();
  const T* gp = io.g.const_data_ptr<T>();
  const T* mp = io.m.const_data_ptr<T>();
  T* ggp = io.grad_g.mutable_data_ptr<T>();
  T* gmp = io.grad_m.mutable_data_ptr<T>();
  cpu::dispatch_unit(cpu::unit_axis({v, dv, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    cpu::parallel_pixel_blocks(v, cpu::pixels_per_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      const std::vector<A> k = gains(mp, io.mv, n, p0, p1);
      const auto g = cpu::plane<U>(gp, v, n);
      const auto d = cpu::plane<U>(dp, dv, n);
      const auto gg = cpu::plane<U>(ggp, o, n);
      std::vector<A> r(p1 - p0);
      cpu::channel_sums<U>(v, p0, p1, r.data(), [&](int64_t c, int64_t p) {
        const A dcp = A(d(c, p));
        gg(c, p) = T(k[p - p0] * dcp);
        return dcp * A(g(c, p));
      });
      for (int64_t p = p0; p < p1; ++p) gmp[n * v.P + p] = T(r[p - p0]);
    });
  });
}

Tensor attention_branch_mix_cpu(Tensor g, Tensor m) {
  const abn::ForwardIO io = abn::prepare_forward(g, m);
  if (io.g.numel() > 0) {
    dispatch_floating(io.g.scalar_type(), abn::kOp, [&](auto tag) { forward<decltype(tag)>(io); });
  }
  return io.out;
}

std::tuple<Tensor, Tensor> attention_branch_mix_backward_cpu(Tensor grad_out, Tensor g, Tensor m) {
  const abn::BackwardIO io = abn::prepare_backward(grad_out, g, m);
  if (io.v.N * io.v.P > 0) {
    dispatch_floating(io.g.scalar_type(), abn::kOp, [&](auto tag) { backward<decltype(tag)>(io); });
  }
  return {io.grad_g, io.grad_m};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("attention_branch_mix", TORCH_BOX(&attention_branch_mix_cpu));
  m.impl("_attention_branch_mix_backward", TORCH_BOX(&attention_branch_mix_backward_cpu));
}

}  // namespace camfast
