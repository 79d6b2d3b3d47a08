// Attention-based dropout on the CPU: forward and backward, NCHW and channels_last in place.
//
// Work goes by blocks of pixels across all channels, sized to stay in L2: the channel sums of a
// block and then its output reuse the same cache lines, so the importance branch reads x from
// memory once. The drop branch needs each sample's maximum before any output; with at least as
// many samples as threads a task holds one whole sample, so its second pass finds x[n] in cache.
#include <algorithm>
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/adl.cuh"
#include "../ops/adl.h"
#include "loops.h"
#include "memory.h"

namespace camfast {
namespace {

using torch::stable::Tensor;

// How the loops walk one sample's [C, P] plane: rows along the outer axis (channels, or pixels
// when kChannelsInner), elements within a row at a stride that is 1 at compile time when kUnit,
// so that the inner loops vectorise. Each tensor gets its own strides, all share the kind.
template <bool kChannelsInner, bool kUnit> struct Walk {
  static constexpr bool channels_inner = kChannelsInner;
  int64_t row_stride, elem_stride;
  explicit Walk(const NCP& v) : row_stride(kChannelsInner ? v.sP : v.sC), elem_stride(kChannelsInner ? v.sC : v.sP) {}
  template <class T> T* row(T* base, int64_t r) const { return base + r * row_stride; }
  int64_t operator[](int64_t e) const { return kUnit ? e : e * elem_stride; }
};

// f(Walk{}) with the one kind of walk that fits every view: channels_last, rows of unit stride
// (NCHW, channel-sliced NCHW), or any strides (mixed layouts, expanded gradients).
template <class F> void dispatch_walk(std::initializer_list<NCP> views, const F& f) {
  const auto all = [&](auto pred) { return std::all_of(views.begin(), views.end(), pred); };
  if (all([](const NCP& v) { return v.channels_inner(); })) return f(Walk<true, true>(*views.begin()));
  if (all([](const NCP& v) { return v.sP == 1 || v.P == 1; })) return f(Walk<false, true>(*views.begin()));
  f(Walk<false, false>(*views.begin()));
}

// Pixels per block: kBlockBytes of one block's channels stay in L2 between two passes.
constexpr int64_t kBlockBytes = 512 << 10;
constexpr int64_t kMaxBlock = 1024;

int64_t pixel_block(const NCP& v, int64_t elem_bytes) {
  return std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(1, v.C * elem_bytes), 16, kMaxBlock);
}

// One term of a channel sum: x, or x * y when kDot.
template <bool kDot, class A, class T> A term(const T* x, int64_t i, const T* y, int64_t j) {
  return kDot ? A(x[i]) * A(y[j]) : A(x[i]);
}

// acc[i] = sum over channels of x (times y when kDot) at pixel p0 + i, for i < np.
template <bool kDot, class T, class W, class A>
void channel_sums(const T* x, W xw, const T* y, W yw, int64_t C, int64_t p0, int64_t np, A* acc) {
  if constexpr (W::channels_inner) {
    for (int64_t i = 0; i < np; ++i) {
      const T* xr = xw.row(x, p0 + i);
      const T* yr = kDot ? yw.row(y, p0 + i) : nullptr;
      A sum = A(0);
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) sum += term<kDot, A>(xr, xw[c], yr, yw[c]);
      acc[i] = sum;
    }
  } else {
    std::fill(acc, acc + np, A(0));
    for (int64_t c = 0; c < C; ++c) {
      const T* xr = xw.row(x, c) + xw[p0];
      const T* yr = kDot ? yw.row(y, c) + yw[p0] : nullptr;
#pragma omp simd
      for (int64_t i = 0; i < np; ++i) acc[i] += term<kDot, A>(xr, xw[i], yr, yw[i]);
    }
  }
}

// out = in * scale + shift at every channel of the pixels [p0, p0 + np); scale and shift are
// indexed by p - p0.
template <class T, class W, class A>
void scale_block(const T* in, W iw, T* out, W ow, int64_t C, int64_t p0, int64_t np, const A* scale,
                 const A* shift) {
  if constexpr (W::channels_inner) {
    for (int64_t i = 0; i < np; ++i) {
      const T* ir = iw.row(in, p0 + i);
      T* orow = ow.row(out, p0 + i);
      const A s = scale[i], h = shift[i];
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) orow[ow[c]] = adl::scaled<T>(A(ir[iw[c]]), s, h);
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      const T* ir = iw.row(in, c) + iw[p0];
      T* orow = ow.row(out, c) + ow[p0];
#pragma omp simd
      for (int64_t i = 0; i < np; ++i) orow[ow[i]] = adl::scaled<T>(A(ir[iw[i]]), scale[i], shift[i]);
    }
  }
}

// Pixels [p0, p0 + np) of one sample: sel = the channel mean (drop branch, until the mask
// replaces it) or its sigmoid; the importance branch also writes out, while the block is in cache.
template <class T, class W>
void forward_block(const T* x, W xw, T* out, W ow, T* sel, const NCP& v, bool drop, int64_t p0, int64_t np) {
  using A = acc_t<T>;
  A scale[kMaxBlock];
  const A zero[kMaxBlock] = {};
  channel_sums<false>(x, xw, x, xw, v.C, p0, np, scale);
  for (int64_t i = 0; i < np; ++i) {
    const T a = adl::channel_mean<T>(scale[i], v.C);
    sel[p0 + i] = drop ? a : adl::importance(a);
    scale[i] = A(sel[p0 + i]);
  }
  if (!drop) scale_block(x, xw, out, ow, v.C, p0, np, scale, zero);
}

// A drop sample's map: its mean a becomes [a < ratio * max a].
template <class T> void make_mask(T* sel, int64_t P, double ratio) {
  NanMax<acc_t<T>> m;
  for (int64_t p = 0; p < P; ++p) m.add(acc_t<T>(sel[p]));
  const T t = adl::threshold<T>(m.result(), ratio);
  for (int64_t p = 0; p < P; ++p) sel[p] = adl::drop_mask(sel[p], t);
}

// The drop branch's output for pixels [p0, p0 + np) of one sample, once sel holds the mask.
template <class T, class W>
void drop_block(const T* x, W xw, T* out, W ow, const T* sel, const NCP& v, int64_t p0, int64_t np) {
  using A = acc_t<T>;
  A scale[kMaxBlock];
  const A zero[kMaxBlock] = {};
  for (int64_t i = 0; i < np; ++i) scale[i] = A(sel[p0 + i]);
  scale_block(x, xw, out, ow, v.C, p0, np, scale, zero);
}

template <class T> void forward(const adl::ForwardIO& io, double ratio) {
  const NCP &v = io.v, &o = io.o;
  const T* xp = io.x.const_data_ptr<T>();
  T* op = io.out.mutable_data_ptr<T>();
  cpu::advise_huge_pages(op, io.out.numel() * int64_t(sizeof(T)));
  T* sp = io.sel.mutable_data_ptr<T>();
  const auto* dp = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  const int64_t block = pixel_block(v, sizeof(T));
  dispatch_walk({v, o}, [&](auto tag) {
    using W = decltype(tag);
    const auto first = [&](int64_t n, int64_t p0, int64_t p1) {
      forward_block(xp + n * v.sN, W(v), op + n * o.sN, W(o), sp + n * v.P, v, dp[n] != 0, p0, p1 - p0);
    };
    const auto second = [&](int64_t n, int64_t p0, int64_t p1) {
      if (dp[n]) drop_block(xp + n * v.sN, W(v), op + n * o.sN, W(o), sp + n * v.P, v, p0, p1 - p0);
    };
    if (v.N < int64_t(torch::stable::get_num_threads())) {
      // Fewer samples than threads: blocks of pixels in parallel, in two rounds around the masks.
      cpu::parallel_pixel_blocks(v, block, first);
      for (int64_t n = 0; n < v.N; ++n) {
        if (dp[n]) make_mask(sp + n * v.P, v.P, ratio);
      }
      cpu::parallel_pixel_blocks(v, block, second);
      return;
    }
    // One sample per task, so that the drop branch's second pass finds x[n] still in cache.
    torch::stable::parallel_for(0, v.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t p0 = 0; p0 < v.P; p0 += block) first(n, p0, std::min(v.P, p0 + block));
        if (!dp[n]) continue;
        make_mask(sp + n * v.P, v.P, ratio);
        for (int64_t p0 = 0; p0 < v.P; p0 += block) second(n, p0, std::min(v.P, p0 + block));
      }
    });
  });
}

// Pixels [p0, p0 + np) of one sample: grad_x = g * sel + shift.
template <class T, class W>
void backward_block(const T* g, W gw, const T* x, W xw, T* gx, W ow, const T* sel, const NCP& v, bool drop,
                    int64_t p0, int64_t np) {
  using A = acc_t<T>;
  A scale[kMaxBlock], shift[kMaxBlock];
  for (int64_t i = 0; i < np; ++i) scale[i] = A(sel[p0 + i]);
  if (drop) {
    std::fill(shift, shift + np, A(0));
  } else {
    channel_sums<true>(g, gw, x, xw, v.C, p0, np, shift);
    for (int64_t i = 0; i < np; ++i) shift[i] = adl::importance_shift(scale[i], shift[i], v.C);
  }
  scale_block(g, gw, gx, ow, v.C, p0, np, scale, shift);
}

template <class T> void backward(const adl::BackwardIO& io) {
  const NCP &gv = io.g, &v = io.v, &o = io.o;
  const T* gp = io.grad_out.const_data_ptr<T>();
  const T* xp = io.x.const_data_ptr<T>();
  const T* sp = io.sel.const_data_ptr<T>();
  const auto* dp = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  T* gxp = io.grad_x.mutable_data_ptr<T>();
  cpu::advise_huge_pages(gxp, io.grad_x.numel() * int64_t(sizeof(T)));
  dispatch_walk({gv, v, o}, [&](auto tag) {
    using W = decltype(tag);
    cpu::parallel_pixel_blocks(v, pixel_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      backward_block(gp + n * gv.sN, W(gv), xp + n * v.sN, W(v), gxp + n * o.sN, W(o), sp + n * v.P, v,
                     dp[n] != 0, p0, p1 - p0);
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
