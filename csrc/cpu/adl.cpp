// Attention-based dropout on the CPU: forward and backward, NCHW and channels_last in place.
//
// Work goes by blocks of pixels across all channels (planes.h), sized to stay in cache: the
// channel sums of a block and then its output reuse the same cache lines, so the importance
// branch reads x from memory once. The drop branch needs each sample's maximum before any
// output; with at least as many samples as threads a task holds one whole sample, so its second
// pass finds x[n] in cache.
#include <algorithm>
#include <tuple>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/adl.cuh"
#include "../ops/adl.h"
#include "loops.h"
#include "planes.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cpu::Unit;

// A drop sample's map: its mean a becomes [a < ratio * max a].
template <class T> void make_mask(T* sel, int64_t P, double ratio) {
  NanMax<acc_t<T>> m;
  for (int64_t p = 0; p < P; ++p) m.add(acc_t<T>(sel[p]));
  const T t = adl::threshold<T>(m.result(), ratio);
  for (int64_t p = 0; p < P; ++p) sel[p] = adl::drop_mask(sel[p], t);
}

template <class T> void forward(const adl::ForwardIO& io, double ratio) {
  using A = acc_t<T>;
  const NCP &v = io.v, &o = io.o;
  const T* x_ptr = io.x.const_data_ptr<T>();
  T* out_ptr = io.out.mutable_data_ptr<T>();
  T* sel_ptr = io.sel.mutable_data_ptr<T>();
  const auto* drop_ptr = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  const int64_t block = cpu::pixels_per_block(v, sizeof(T));
  cpu::dispatch_unit(cpu::unit_axis({v, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    // out = x * sel over the pixels [p0, p1) of sample n; s[i] is sel at p0 + i.
    const auto scale = [&](int64_t n, int64_t p0, int64_t p1, const A* s) {
      const auto x = cpu::plane<U>(x_ptr, v, n);
      const auto out = cpu::plane<U>(out_ptr, o, n);
      cpu::for_each_in_block<U>(v, p0, p1, [&](int64_t c, int64_t p) {
        out(c, p) = adl::scaled<T>(A(x(c, p)), s[p - p0], A(0));
      });
    };
    // sel over the pixels [p0, p1) of sample n: the channel mean (drop branch, until the mask
    // replaces it) or its sigmoid; the importance branch also writes out, while the block is in cache.
    const auto means_and_importance = [&](int64_t n, int64_t p0, int64_t p1) {
      const auto x = cpu::plane<U>(x_ptr, v, n);
      const bool drop = drop_ptr[n] != 0;
      std::vector<sum_t> sums(p1 - p0);
      std::vector<A> s(p1 - p0);
      cpu::channel_sums<U>(v, p0, p1, sums.data(), [&](int64_t c, int64_t p) { return A(x(c, p)); });
      for (int64_t p = p0; p < p1; ++p) {
        const T a = adl::channel_mean<T>(sums[p - p0], v.C);
        sel_ptr[n * v.P + p] = drop ? a : adl::importance(a);
        s[p - p0] = A(sel_ptr[n * v.P + p]);
      }
      if (!drop) scale(n, p0, p1, s.data());
    };
    // The drop branch's output, once sel holds the mask.
    const auto apply_mask = [&](int64_t n, int64_t p0, int64_t p1) {
      if (!drop_ptr[n]) return;
      std::vector<A> s(sel_ptr + n * v.P + p0, sel_ptr + n * v.P + p1);
      scale(n, p0, p1, s.data());
    };
    if (v.N < int64_t(torch::stable::get_num_threads())) {
      // Fewer samples than threads: blocks of pixels in parallel, in two rounds around the masks.
      cpu::parallel_pixel_blocks(v, block, means_and_importance);
      for (int64_t n = 0; n < v.N; ++n) {
        if (drop_ptr[n]) make_mask(sel_ptr + n * v.P, v.P, ratio);
      }
      cpu::parallel_pixel_blocks(v, block, apply_mask);
      return;
    }
    // One sample per task, so that the drop branch's second pass finds x[n] still in cache.
    torch::stable::parallel_for(0, v.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t p0 = 0; p0 < v.P; p0 += block) means_and_importance(n, p0, std::min(v.P, p0 + block));
        if (!drop_ptr[n]) continue;
        make_mask(sel_ptr + n * v.P, v.P, ratio);
        for (int64_t p0 = 0; p0 < v.P; p0 += block) apply_mask(n, p0, std::min(v.P, p0 + block));
      }
    });
  });
}

// grad_x = g * sel + shift, per block of pixels of one sample; the shift (importance branch
// only) needs the block's sum of g * x first, so the block is read twice, the second time from cache.
template <class T> void backward(const adl::BackwardIO& io) {
  using A = acc_t<T>;
  const NCP &gv = io.g, &v = io.v, &o = io.o;
  const T* grad_out_ptr = io.grad_out.const_data_ptr<T>();
  const T* x_ptr = io.x.const_data_ptr<T>();
  const T* sel_ptr = io.sel.const_data_ptr<T>();
  const auto* drop_ptr = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  T* grad_x_ptr = io.grad_x.mutable_data_ptr<T>();
  cpu::dispatch_unit(cpu::unit_axis({v, gv, o}), [&](auto unit) {
    constexpr Unit U = decltype(unit)::value;
    cpu::parallel_pixel_blocks(v, cpu::pixels_per_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      const auto g = cpu::plane<U>(grad_out_ptr, gv, n);
      const auto gx = cpu::plane<U>(grad_x_ptr, o, n);
      const T* sel = sel_ptr + n * v.P;
      std::vector<A> shift(p1 - p0, A(0));
      if (!drop_ptr[n]) {
        const auto x = cpu::plane<U>(x_ptr, v, n);
        std::vector<sum_t> dot(p1 - p0);
        cpu::channel_sums<U>(v, p0, p1, dot.data(), [&](int64_t c, int64_t p) { return A(g(c, p)) * A(x(c, p)); });
        for (int64_t p = p0; p < p1; ++p) shift[p - p0] = A(adl::importance_shift(sum_t(sel[p]), dot[p - p0], v.C));
      }
      cpu::for_each_in_block<U>(v, p0, p1, [&](int64_t c, int64_t p) {
        gx(c, p) = adl::scaled<T>(A(g(c, p)), A(sel[p]), shift[p - p0]);
      });
    });
  });
}

std::tuple<Tensor, Tensor> adl_cpu(Tensor x, Tensor drop, double threshold) {
  const adl::ForwardIO io = adl::prepare_forward(x, drop);
  if (io.v.N * io.v.P > 0) {  // C = 0 still fills the map: the mean of no channels is NaN
    dispatch_floating(io.x.scalar_type(), adl::kOp, [&](auto tag) { forward<decltype(tag)>(io, threshold); });
  }
  return {io.out, io.sel};
}

Tensor adl_backward_cpu(Tensor grad_out, Tensor x, Tensor selected, Tensor drop) {
  const adl::BackwardIO io = adl::prepare_backward(grad_out, x, selected, drop);
  if (io.x.numel() > 0) {
    dispatch_floating(io.x.scalar_type(), adl::kOp, [&](auto tag) { backward<decltype(tag)>(io); });
  }
  return io.grad_x;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("adl", TORCH_BOX(&adl_cpu));
  m.impl("_adl_backward", TORCH_BOX(&adl_backward_cpu));
}

}  // namespace camfast
