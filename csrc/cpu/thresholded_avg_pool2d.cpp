// Thresholded average pooling on the CPU: forward and backward, NCHW and channels_last in place.
#include <algorithm>
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/thresholded_avg_pool2d.cuh"
#include "../ops/thresholded_avg_pool2d.h"
#include "loops.h"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cpu::kChannelBlock;
using cpu::Stride;

template <class T, bool kUnit>
void forward_row(const T* x, Stride<kUnit> at, int64_t P, double tau, T* out, T* thr, int32_t* cnt) {
  using A = acc_t<T>;
  A row_max = lowest<A>();
  int has_nan = 0;
  // NaN never passes `>`, so per-lane maxima combine exactly; NaN is tracked on the side.
#pragma omp simd reduction(max : row_max) reduction(| : has_nan)
  for (int64_t p = 0; p < P; ++p) {
    const A v = A(x[at(p)]);
    has_nan |= (v != v);
    row_max = v > row_max ? v : row_max;
  }
  const T t = thresholded_avg_pool2d::threshold<T>(has_nan ? quiet_nan<A>() : row_max, tau);
  const A tt = A(t);
  sum_t sum = 0;
  int32_t count = 0;
  for (int64_t p0 = 0; p0 < P; p0 += cpu::kWideSumBlock) {
    const int64_t p1 = std::min(P, p0 + cpu::kWideSumBlock);
    A part = A(0);
    int32_t kept = 0;
#pragma omp simd reduction(+ : part, kept)
    for (int64_t p = p0; p < p1; ++p) {
      const A v = A(x[at(p)]);
      part += thresholded_avg_pool2d::kept_value(v, tt);
      kept += thresholded_avg_pool2d::counted(v, tt);
    }
    sum += part;
    count += kept;
  }
  *out = thresholded_avg_pool2d::mean<T>(sum, count);
  *thr = t;
  *cnt = count;
}

// Channels innermost: one pass per statistic over a block of channels, vectorised over C.
template <class T>
void forward_channel_block(const NCP& v, const T* x, double tau, int64_t c0, int64_t c1, T* out, T* thr,
                           int32_t* cnt) {
  using A = acc_t<T>;
  const int64_t nc = c1 - c0;
  A row_max[kChannelBlock], t[kChannelBlock];
  sum_t sum[kChannelBlock];
  int32_t count[kChannelBlock];
  bool has_nan[kChannelBlock];
  for (int64_t c = 0; c < nc; ++c) {
    row_max[c] = lowest<A>();
    has_nan[c] = false;
    sum[c] = 0;
    count[c] = 0;
  }
  for (int64_t p = 0; p < v.P; ++p) {
    const T* px = x + p * v.stride_p;
    for (int64_t c = 0; c < nc; ++c) {
      const A val = A(px[c]);
      has_nan[c] |= (val != val);
      row_max[c] = val > row_max[c] ? val : row_max[c];
    }
  }
  for (int64_t c = 0; c < nc; ++c) {
    thr[c] = thresholded_avg_pool2d::threshold<T>(has_nan[c] ? quiet_nan<A>() : row_max[c], tau);
    t[c] = A(thr[c]);
  }
  A part[kChannelBlock];
  for (int64_t p0 = 0; p0 < v.P; p0 += cpu::kSumChain) {
    for (int64_t c = 0; c < nc; ++c) part[c] = A(0);
    for (int64_t p = p0; p < std::min(v.P, p0 + cpu::kSumChain); ++p) {
      const T* px = x + p * v.stride_p;
      for (int64_t c = 0; c < nc; ++c) {
        const A val = A(px[c]);
        part[c] += thresholded_avg_pool2d::kept_value(val, t[c]);
        count[c] += thresholded_avg_pool2d::counted(val, t[c]);
      }
    }
    for (int64_t c = 0; c < nc; ++c) sum[c] += part[c];
  }
  for (int64_t c = 0; c < nc; ++c) {
    out[c] = thresholded_avg_pool2d::mean<T>(sum[c], count[c]);
    cnt[c] = count[c];
  }
}

template <class T> void forward(const thresholded_avg_pool2d::ForwardIO& io, double tau) {
  const NCP& v = io.v;
  const T* x_ptr = io.x.const_data_ptr<T>();
  T* out_ptr = io.out.mutable_data_ptr<T>();
  T* thr_ptr = io.thr.mutable_data_ptr<T>();
  int32_t* cnt_ptr = io.cnt.mutable_data_ptr<int32_t>();
  if (v.channels_inner()) {
    cpu::parallel_channel_blocks(v, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t r = n * v.C + c0;
      forward_channel_block(v, x_ptr + n * v.stride_n + c0, tau, c0, c1, out_ptr + r, thr_ptr + r, cnt_ptr + r);
    });
    return;
  }
  cpu::parallel_rows(v, [&](int64_t n, int64_t c) {
    const T* row = x_ptr + n * v.stride_n + c * v.stride_c;
    const int64_t r = n * v.C + c;
    cpu::with_strides([&](auto xs) { forward_row(row, xs, v.P, tau, out_ptr + r, thr_ptr + r, cnt_ptr + r); },
                      v.stride_p);
  });
}

template <class T, bool kUnit>
void backward_row(const T* x, Stride<kUnit> x_at, T* gx, Stride<kUnit> gx_at, int64_t P, T t, T kept) {
  using A = acc_t<T>;
  const A tt = A(t);
  for (int64_t p = 0; p < P; ++p) gx[gx_at(p)] = thresholded_avg_pool2d::input_grad(A(x[x_at(p)]), tt, kept);
}

template <class T> void backward(const thresholded_avg_pool2d::BackwardIO& io) {
  const NCP &v = io.v, &gv = io.o;
  const T* grad_out_ptr = io.grad_out.const_data_ptr<T>();
  const T* x_ptr = io.x.const_data_ptr<T>();
  const T* thr_ptr = io.thr.const_data_ptr<T>();
  const int32_t* cnt_ptr = io.cnt.const_data_ptr<int32_t>();
  T* grad_x_ptr = io.grad_x.mutable_data_ptr<T>();
  if (v.channels_inner() && gv.channels_inner()) {
    cpu::parallel_channel_blocks(v, [&](int64_t n, int64_t c0, int64_t c1) {
      using A = acc_t<T>;
      const int64_t nc = c1 - c0, r = n * v.C + c0;
      A t[kChannelBlock];
      T kept[kChannelBlock];
      for (int64_t c = 0; c < nc; ++c) {
        t[c] = A(thr_ptr[r + c]);
        kept[c] = thresholded_avg_pool2d::kept_grad(grad_out_ptr[r + c], cnt_ptr[r + c]);
      }
      for (int64_t p = 0; p < v.P; ++p) {
        const T* px = x_ptr + n * v.stride_n + c0 + p * v.stride_p;
        T* pg = grad_x_ptr + n * gv.stride_n + c0 + p * gv.stride_p;
        for (int64_t c = 0; c < nc; ++c) pg[c] = thresholded_avg_pool2d::input_grad(A(px[c]), t[c], kept[c]);
      }
    });
    return;
  }
  cpu::parallel_rows(v, [&](int64_t n, int64_t c) {
    const int64_t r = n * v.C + c;
    const T* row = x_ptr + n * v.stride_n + c * v.stride_c;
    T* grow = grad_x_ptr + n * gv.stride_n + c * gv.stride_c;
    const T kept = thresholded_avg_pool2d::kept_grad(grad_out_ptr[r], cnt_ptr[r]);
    cpu::with_strides([&](auto xs, auto gs) { backward_row(row, xs, grow, gs, v.P, thr_ptr[r], kept); }, v.stride_p,
                      gv.stride_p);
  });
}

std::tuple<Tensor, Tensor, Tensor> thresholded_avg_pool2d_cpu(Tensor x, double tau) {
  const thresholded_avg_pool2d::ForwardIO io = thresholded_avg_pool2d::prepare_forward(x);
  if (io.x.numel() > 0) {
    dispatch_floating(io.x.scalar_type(), thresholded_avg_pool2d::kOp,
                      [&](auto tag) { forward<decltype(tag)>(io, tau); });
  }
  return {io.out, io.thr, io.cnt};
}

Tensor thresholded_avg_pool2d_backward_cpu(Tensor grad_out, Tensor x, Tensor threshold, Tensor count) {
  const thresholded_avg_pool2d::BackwardIO io = thresholded_avg_pool2d::prepare_backward(grad_out, x, threshold, count);
  if (io.x.numel() > 0) {
    dispatch_floating(io.x.scalar_type(), thresholded_avg_pool2d::kOp, [&](auto tag) { backward<decltype(tag)>(io); });
  }
  return io.grad_x;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("thresholded_avg_pool2d", TORCH_BOX(&thresholded_avg_pool2d_cpu));
  m.impl("_thresholded_avg_pool2d_backward", TORCH_BOX(&thresholded_avg_pool2d_backward_cpu));
}

}  // namespace camfast
