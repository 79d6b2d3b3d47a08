// Attention-based dropout on the CPU: forward and backward, NCHW and channels_last in place.
//
// Work goes by blocks of pixels across all channels, sized to stay in L2: the channel sums of a
// block and then its output reuse the same cache lines, so the importance branch reads x from
// memory once. The drop branch needs each sample's maximum before any output; a task holds one
// whole sample so that its second pass finds x[n] still in cache.
#include <algorithm>
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/adl.cuh"
#include "../ops/adl.h"
#include "loops.h"

namespace camfast {
namespace {

using torch::stable::Tensor;

// Addressing of one sample's [C, P] plane, with the innermost axis known at compile time so the
// inner loops vectorise. Loops walk the innermost axis of the layout last.
struct PixelsInner {  // NCHW, channel-sliced NCHW (rows of unit stride)
  static constexpr bool kChannelsInner = false;
  int64_t sC;
  explicit PixelsInner(const NCP& v) : sC(v.sC) {}
  int64_t operator()(int64_t c, int64_t p) const { return c * sC + p; }
};

struct ChannelsInner {  // channels_last
  static constexpr bool kChannelsInner = true;
  int64_t sP;
  explicit ChannelsInner(const NCP& v) : sP(v.sP) {}
  int64_t operator()(int64_t c, int64_t p) const { return p * sP + c; }
};

struct AnyStrides {  // tensors of mixed layouts, expanded gradients
  static constexpr bool kChannelsInner = false;
  int64_t sC, sP;
  explicit AnyStrides(const NCP& v) : sC(v.sC), sP(v.sP) {}
  int64_t operator()(int64_t c, int64_t p) const { return c * sC + p * sP; }
};

// f(Layout{}) with the one addressing type that fits every view.
template <class F> void dispatch_layout(std::initializer_list<NCP> views, const F& f) {
  const bool channels = std::all_of(views.begin(), views.end(), [](const NCP& v) { return v.channels_inner(); });
  const bool pixels = std::all_of(views.begin(), views.end(), [](const NCP& v) { return v.sP == 1 || v.P == 1; });
  if (channels) return f(ChannelsInner(*views.begin()));
  if (pixels) return f(PixelsInner(*views.begin()));
  f(AnyStrides(*views.begin()));
}

// Pixels per block: kBlockBytes of one block's channels stay in L2 between two passes.
constexpr int64_t kBlockBytes = 256 << 10;
constexpr int64_t kMaxBlock = 512;

int64_t pixel_block(const NCP& v, int64_t elem_bytes) {
  return std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(1, v.C * elem_bytes), 16, kMaxBlock);
}

// acc[i] = sum over channels c of f(c, p0 + i), for i < np.
template <class L, class A, class F> void channel_sums(int64_t C, int64_t p0, int64_t np, A* acc, const F& f) {
  if constexpr (L::kChannelsInner) {
    for (int64_t i = 0; i < np; ++i) {
      A sum = A(0);
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) sum += f(c, p0 + i);
      acc[i] = sum;
    }
  } else {
    std::fill(acc, acc + np, A(0));
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t i = 0; i < np; ++i) acc[i] += f(c, p0 + i);
    }
  }
}

// f(c, p) for every channel c and pixel p of [p0, p0 + np), in memory order.
template <class L, class F> void for_each(int64_t C, int64_t p0, int64_t np, const F& f) {
  if constexpr (L::kChannelsInner) {
    for (int64_t p = p0; p < p0 + np; ++p) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) f(c, p);
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t p = p0; p < p0 + np; ++p) f(c, p);
    }
  }
}

// One sample: sel[p] and out = x * sel. sel holds the mean map until the drop mask replaces it.
template <class T, class L>
void forward_sample(const T* x, L xl, T* out, L ol, T* sel, const NCP& v, bool drop, double ratio) {
  using A = acc_t<T>;
  const int64_t block = pixel_block(v, sizeof(T));
  auto scale = [&](int64_t p0, int64_t np) {
    for_each<L>(v.C, p0, np, [&](int64_t c, int64_t p) {
      out[ol(c, p)] = adl::scaled<T>(A(x[xl(c, p)]), A(sel[p]), A(0));
    });
  };
  A sums[kMaxBlock];
  for (int64_t p0 = 0; p0 < v.P; p0 += block) {
    const int64_t np = std::min(block, v.P - p0);
    channel_sums<L>(v.C, p0, np, sums, [&](int64_t c, int64_t p) { return A(x[xl(c, p)]); });
    for (int64_t i = 0; i < np; ++i) {
      const T a = adl::channel_mean<T>(sums[i], v.C);
      sel[p0 + i] = drop ? a : adl::importance(a);
    }
    if (!drop) scale(p0, np);  // while the block is in cache
  }
  if (!drop) return;
  NanMax<A> m;
  for (int64_t p = 0; p < v.P; ++p) m.add(A(sel[p]));
  const T t = adl::threshold<T>(m.result(), ratio);
  for (int64_t p = 0; p < v.P; ++p) sel[p] = adl::drop_mask(sel[p], t);
  for (int64_t p0 = 0; p0 < v.P; p0 += block) scale(p0, std::min(block, v.P - p0));
}

template <class T> void forward(const adl::ForwardIO& io, double ratio) {
  const NCP &v = io.v, &o = io.o;
  const T* xp = io.x.const_data_ptr<T>();
  T* op = io.out.mutable_data_ptr<T>();
  T* sp = io.sel.mutable_data_ptr<T>();
  const auto* dp = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  dispatch_layout({v, o}, [&](auto tag) {
    using L = decltype(tag);
    // One sample per task: a training batch has at least as many samples as threads.
    torch::stable::parallel_for(0, v.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        forward_sample(xp + n * v.sN, L(v), op + n * o.sN, L(o), sp + n * v.P, v, dp[n] != 0, ratio);
      }
    });
  });
}

// Pixels [p0, p0 + np) of sample n: grad_x = g * sel + shift.
template <class T, class L>
void backward_block(const T* g, L gl, const T* x, L xl, T* gx, L ol, const T* sel, const NCP& v, bool drop,
                    int64_t p0, int64_t np) {
  using A = acc_t<T>;
  A shift[kMaxBlock];
  if (drop) {
    std::fill(shift, shift + np, A(0));
  } else {
    channel_sums<L>(v.C, p0, np, shift, [&](int64_t c, int64_t p) { return A(g[gl(c, p)]) * A(x[xl(c, p)]); });
    for (int64_t i = 0; i < np; ++i) shift[i] = adl::importance_shift(A(sel[p0 + i]), shift[i], v.C);
  }
  for_each<L>(v.C, p0, np, [&](int64_t c, int64_t p) {
    gx[ol(c, p)] = adl::scaled<T>(A(g[gl(c, p)]), A(sel[p]), shift[p - p0]);
  });
}

template <class T> void backward(const adl::BackwardIO& io) {
  const NCP &gv = io.g, &v = io.v, &o = io.o;
  const T* gp = io.grad_out.const_data_ptr<T>();
  const T* xp = io.x.const_data_ptr<T>();
  const T* sp = io.sel.const_data_ptr<T>();
  const auto* dp = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  T* gxp = io.grad_x.mutable_data_ptr<T>();
  dispatch_layout({gv, v, o}, [&](auto tag) {
    using L = decltype(tag);
    cpu::parallel_pixel_blocks(v, pixel_block(v, sizeof(T)), [&](int64_t n, int64_t p0, int64_t p1) {
      backward_block(gp + n * gv.sN, L(gv), xp + n * v.sN, L(v), gxp + n * o.sN, L(o), sp + n * v.P, v,
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
