// GGAM channel-spatial attention on the CPU: forward and backward, NCHW and channels_last in place.
//
// Sigmoid: one task per block of pixels of one sample, sized by pixels_per_block so that the
// block stays in cache between its two sweeps (the channel sums, then the writes): a is read from
// memory once. Softmax needs every z of a sample before any t, so its tasks are whole samples.
#include <cmath>
#include <tuple>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/channel_spatial_attention.cuh"
#include "../ops/channel_spatial_attention.h"
#include "loops.h"
#include "planes.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cpu::Unit;

// s[n, :] in the accumulation type.
template <class T>
std::vector<acc_t<T>> weights_of(const T* s, channel_spatial_attention::Weights w, int64_t n, int64_t C) {
  std::vector<acc_t<T>> out(C);
  for (int64_t c = 0; c < C; ++c) out[c] = acc_t<T>(s[n * w.stride_n + c * w.stride_c]);
  return out;
}

// t := softmax(z) over one sample's map, as torch.softmax: exp(z - max) / sum, NaN-propagating max.
template <class A> void softmax_of(const sum_t* z, int64_t P, A* t) {
  NanMax<A> m;
  for (int64_t p = 0; p < P; ++p) m.add(A(z[p]));
  const A top = m.result();
  sum_t sum = 0;
  for (int64_t p = 0; p < P; ++p) sum += (t[p] = std::exp(A(z[p]) - top));
  for (int64_t p = 0; p < P; ++p) t[p] = A(t[p] / sum);
}

template <class T> void forward(const channel_spatial_attention::ForwardIO& io, bool softmax) {
  using A = acc_t<T>;
  const NCP &v = io.v, &o = io.o;
  const T* a_ptr = io.a.const_data_ptr<T>();
  const T* s_ptr = io.s.const_data_ptr<T>();
  T* out_ptr = io.out.mutable_data_ptr<T>();
  A* t_ptr = io.t.mutable_data_ptr<A>();
  cpu::dispatch_unit(cpu::unit_axis({v, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    // z over the pixels [p0, p1) of sample n, written to z[0, p1 - p0).
    auto channel_sums = [&](int64_t n, const A* w, int64_t p0, int64_t p1, sum_t* z) {
      const auto a = cpu::plane<U>(a_ptr, v, n);
      cpu::channel_sums<U>(v, p0, p1, z, [&](int64_t c, int64_t p) { return w[c] * A(a(c, p)); });
    };
    auto scale = [&](int64_t n, int64_t p0, int64_t p1, const A* t) {
      const auto a = cpu::plane<U>(a_ptr, v, n);
      const auto out = cpu::plane<U>(out_ptr, o, n);
      cpu::for_each_in_block<U>(v, p0, p1, [&](int64_t c, int64_t p) { out(c, p) = T(A(a(c, p)) * t[p - p0]); });
    };
    if (!softmax) {
      cpu::parallel_pixel_blocks(v, cpu::pixels_per_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
        const std::vector<A> w = weights_of(s_ptr, io.w, n, v.C);
        A* t = t_ptr + n * v.P + p0;
        std::vector<sum_t> z(p1 - p0);
        channel_sums(n, w.data(), p0, p1, z.data());
        for (int64_t i = 0; i < p1 - p0; ++i) t[i] = sigmoid(A(z[i]));
        scale(n, p0, p1, t);
      });
      return;
    }
    torch::stable::parallel_for(0, v.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const std::vector<A> w = weights_of(s_ptr, io.w, n, v.C);
        A* t = t_ptr + n * v.P;
        std::vector<sum_t> z(v.P);
        channel_sums(n, w.data(), 0, v.P, z.data());
        softmax_of(z.data(), v.P, t);
        scale(n, 0, v.P, t);
      }
    });
  });
}

template <class T> void backward(const channel_spatial_attention::BackwardIO& io, bool softmax) {
  using A = acc_t<T>;
  const NCP &v = io.v, &gv = io.g, &o = io.o;
  const T* grad_out_ptr = io.grad_out.const_data_ptr<T>();
  const T* a_ptr = io.a.const_data_ptr<T>();
  const T* s_ptr = io.s.const_data_ptr<T>();
  const A* t_ptr = io.t.const_data_ptr<A>();
  T* grad_a_ptr = io.grad_a.mutable_data_ptr<T>();
  T* grad_s_ptr = io.grad_s.mutable_data_ptr<T>();
  cpu::dispatch_unit(cpu::unit_axis({v, gv, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    // r = sum_c g a over the pixels [p0, p1) of sample n, written to r[0, p1 - p0).
    auto channel_sums = [&](int64_t n, int64_t p0, int64_t p1, sum_t* r) {
      const auto a = cpu::plane<U>(a_ptr, v, n);
      const auto g = cpu::plane<U>(grad_out_ptr, gv, n);
      cpu::channel_sums<U>(v, p0, p1, r, [&](int64_t c, int64_t p) { return A(g(c, p)) * A(a(c, p)); });
    };
    // grad_a over the pixels [p0, p1), and their share of grad_s added to gs[0, C).
    auto input_grads = [&](int64_t n, const A* w, int64_t p0, int64_t p1, const A* t, const A* u, sum_t* gs) {
      const auto a = cpu::plane<U>(a_ptr, v, n);
      const auto g = cpu::plane<U>(grad_out_ptr, gv, n);
      const auto ga = cpu::plane<U>(grad_a_ptr, o, n);
      cpu::add_pixel_sums<U>(v, p0, p1, gs, [&](int64_t c, int64_t p) {
        ga(c, p) = T(channel_spatial_attention::input_grad(A(g(c, p)), t[p - p0], w[c], u[p - p0]));
        return u[p - p0] * A(a(c, p));
      });
    };
    if (!softmax) {
      // grad_s gets one partial sum per block, added up in a fixed order afterwards.
      const int64_t block = cpu::pixels_per_block(v, sizeof(T));
      const int64_t blocks = (v.P + block - 1) / block;
      std::vector<sum_t> partial(v.N * blocks * v.C, 0);
      cpu::parallel_pixel_blocks(v, block, [&](int64_t n, int64_t p0, int64_t p1) {
        const std::vector<A> w = weights_of(s_ptr, io.w, n, v.C);
        const A* t = t_ptr + n * v.P + p0;
        std::vector<sum_t> r(p1 - p0);
        std::vector<A> u(p1 - p0);
        channel_sums(n, p0, p1, r.data());
        for (int64_t i = 0; i < p1 - p0; ++i) u[i] = channel_spatial_attention::sigmoid_grad(t[i], A(r[i]));
        input_grads(n, w.data(), p0, p1, t, u.data(), partial.data() + (n * blocks + p0 / block) * v.C);
      });
      for (int64_t n = 0; n < v.N; ++n) {
        for (int64_t c = 0; c < v.C; ++c) {
          sum_t sum = 0;
          for (int64_t b = 0; b < blocks; ++b) sum += partial[(n * blocks + b) * v.C + c];
          grad_s_ptr[n * v.C + c] = T(sum);
        }
      }
      return;
    }
    torch::stable::parallel_for(0, v.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const std::vector<A> w = weights_of(s_ptr, io.w, n, v.C);
        const A* t = t_ptr + n * v.P;
        std::vector<sum_t> r(v.P), gs(v.C, 0);
        std::vector<A> u(v.P);
        channel_sums(n, 0, v.P, r.data());
        sum_t sum_tr = 0;
        for (int64_t p = 0; p < v.P; ++p) sum_tr += t[p] * r[p];
        // u = t (r - sum_tr) in double, rounded once: u sums to 0 over the map, so grad_s = sum u a
        // cancels, and a sum_tr rounded to float would shift every u alike (5x eager's error at
        // 8192 x 8192).
        for (int64_t p = 0; p < v.P; ++p) u[p] = A(channel_spatial_attention::softmax_grad(sum_t(t[p]), r[p], sum_tr));
        input_grads(n, w.data(), 0, v.P, t, u.data(), gs.data());
        for (int64_t c = 0; c < v.C; ++c) grad_s_ptr[n * v.C + c] = T(gs[c]);
      }
    });
  });
}

std::tuple<Tensor, Tensor> channel_spatial_attention_cpu(Tensor a, Tensor s, bool softmax) {
  const channel_spatial_attention::ForwardIO io = channel_spatial_attention::prepare_forward(a, s);
  if (io.v.N * io.v.P > 0) {
    dispatch_floating(io.a.scalar_type(), channel_spatial_attention::kOp,
                      [&](auto tag) { forward<decltype(tag)>(io, softmax); });
  }
  return {io.out, io.t};
}

std::tuple<Tensor, Tensor> channel_spatial_attention_backward_cpu(Tensor grad_out, Tensor a, Tensor s, Tensor t,
                                                                  bool softmax) {
  const channel_spatial_attention::BackwardIO io = channel_spatial_attention::prepare_backward(grad_out, a, s, t);
  if (io.v.N * io.v.P > 0) {
    dispatch_floating(io.a.scalar_type(), channel_spatial_attention::kOp,
                      [&](auto tag) { backward<decltype(tag)>(io, softmax); });
  }
  return {io.grad_a, io.grad_s};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("channel_spatial_attention", TORCH_BOX(&channel_spatial_attention_cpu));
  m.impl("_channel_spatial_attention_backward", TORCH_BOX(&channel_spatial_attention_backward_cpu));
}

}  // namespace camfast
