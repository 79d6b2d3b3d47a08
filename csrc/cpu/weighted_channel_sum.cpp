// The gradient CAM methods' raw map on the CPU, NCHW and channels_last in place.
//
// Weighted methods first: per image (class t, sample n), each channel's spatial sums and its
// weight, one task per image. Then every method: per image and block of pixels, the channel sum
// and the ReLU. A channel's map (P values) stays in L1 between the passes of the first step.
#include <algorithm>
#include <string>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/weighted_channel_sum.cuh"
#include "../ops/weighted_channel_sum.h"
#include "loops.h"
#include "planes.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cpu::Unit;
using weighted_channel_sum::Method;

template <class T> struct Kernel {
  // Weights and sums in double (sum_t): these maps are small and read from cache.
  using A = sum_t;
  const weighted_channel_sum::IO& io;
  A eps;

  template <Unit U> cpu::Plane<const T, U> act(int64_t i) const {
    return {io.act.const_data_ptr<T>() + io.act_offset(i), io.a.stride_c, io.a.stride_p};
  }
  template <Unit U> cpu::Plane<const T, U> grad(int64_t i) const {
    return {io.grad.const_data_ptr<T>() + io.grad_offset(i), io.g.stride_c, io.g.stride_p};
  }

  // w[i * K + k]: channel k's weight in image i, from its spatial sums.
  template <Method M, Unit U> std::vector<A> weights() const {
    const NCP& v = io.a;
    std::vector<A> w(io.images() * v.C);
    const int64_t grain = std::max<int64_t>(1, cpu::kGrainElements / std::max<int64_t>(1, v.C * v.P));
    torch::stable::parallel_for(0, io.images(), grain, [&](int64_t begin, int64_t end) {
      std::vector<A> s(v.C), num(v.C), den(v.C);
      for (int64_t i = begin; i < end; ++i) {
        const auto a = act<U>(i);
        const auto g = grad<U>(i);
        for (auto* sums : {&s, &num, &den}) std::fill(sums->begin(), sums->end(), A(0));
        if constexpr (weighted_channel_sum::needs_s(M)) {
          cpu::add_pixel_sums<U>(v, 0, v.P, s.data(), [&](int64_t c, int64_t p) { return A(a(c, p)); });
        }
        cpu::add_pixel_sums<U>(v, 0, v.P, num.data(), [&](int64_t c, int64_t p) {
          return weighted_channel_sum::numerator<M>(A(g(c, p)), A(a(c, p)), s[c]);
        });
        if constexpr (weighted_channel_sum::needs_den(M)) {
          cpu::add_pixel_sums<U>(v, 0, v.P, den.data(), [&](int64_t c, int64_t p) {
            return weighted_channel_sum::denominator<M>(A(g(c, p)), A(a(c, p)), s[c]);
          });
        }
        for (int64_t c = 0; c < v.C; ++c) w[i * v.C + c] = weighted_channel_sum::weight<M>(num[c], den[c], v.P, eps);
      }
    });
    return w;
  }

  // out[i, p] = ReLU(sum_k term), per image and block of pixels.
  template <Method M, Unit U> void maps(const std::vector<A>& w) const {
    const NCP& v = io.a;
    NCP images = v;
    images.N = io.images();
    T* out = io.out.mutable_data_ptr<T>();
    cpu::parallel_pixel_blocks(images, cpu::pixels_per_block(v, sizeof(T)), [&](int64_t i, int64_t p0, int64_t p1) {
      std::vector<A> sum(p1 - p0);
      const auto a = act<U>(i);
      if constexpr (weighted_channel_sum::weighted(M)) {
        const A* wi = w.data() + i * v.C;
        cpu::channel_sums<U>(v, p0, p1, sum.data(), [&](int64_t c, int64_t p) { return wi[c] * A(a(c, p)); });
      } else {
        const auto g = grad<U>(i);
        cpu::channel_sums<U>(v, p0, p1, sum.data(), [&](int64_t c, int64_t p) {
          return weighted_channel_sum::term<M>(A(g(c, p)), A(a(c, p)));
        });
      }
      T* row = out + i * v.P;
      for (int64_t p = p0; p < p1; ++p) row[p] = T(weighted_channel_sum::relu(sum[p - p0]));
    });
  }

  void run() const {
    cpu::dispatch_unit(cpu::unit_axis({io.a, io.g}), [&](auto unit) {
      constexpr Unit U = decltype(unit)::value;
      weighted_channel_sum::dispatch_method(io.method, [&](auto method) {
        constexpr Method M = decltype(method)::value;
        if constexpr (weighted_channel_sum::weighted(M)) {
          maps<M, U>(weights<M, U>());
        } else {
          maps<M, U>({});
        }
      });
    });
  }
};

Tensor weighted_channel_sum_cpu(Tensor act, Tensor grad, std::string method, double eps) {
  const weighted_channel_sum::IO io = weighted_channel_sum::prepare(act, grad, method, eps);
  if (io.images() > 0) {
    dispatch_floating(io.act.scalar_type(), weighted_channel_sum::kOp, [&](auto tag) {
      using T = decltype(tag);
      Kernel<T>{io, sum_t(eps)}.run();
    });
  }
  return io.out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("weighted_channel_sum", TORCH_BOX(&weighted_channel_sum_cpu));
}

}  // namespace camfast
