// Thresholded average pooling on CUDA: forward and backward, NCHW and channels_last in place.
//
// NCHW rows are contiguous: one warp reduces one row. With channels innermost a warp instead
// covers 32 consecutive channels (coalesced) and 8 warps split the pixels of that channel block.
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/thresholded_avg_pool2d.cuh"
#include "../ops/thresholded_avg_pool2d.h"
#include "cuda_utils.cuh"

namespace camfast {
namespace {

using torch::stable::Tensor;
using cuda::kWarp;

constexpr int kRowsPerBlock = 8;       // warps per block in the row kernels
constexpr int kTileC = kWarp;          // channels per block in the channel-tile kernels
constexpr int kTileP = 8;              // pixel lanes per block in the channel-tile kernels

template <class T>
__global__ void forward_rows(const T* __restrict__ x, NCP v, double tau, T* out, T* thr, int32_t* cnt) {
  using A = acc_t<T>;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= v.N * v.C) return;  // whole warps leave together
  const int lane = threadIdx.x % kWarp;
  const T* xr = x + (row / v.C) * v.stride_n + (row % v.C) * v.stride_c;
  NanMax<A> m;
  for (int64_t p = lane; p < v.P; p += kWarp) m.add(A(xr[p * v.stride_p]));
  const T t = thresholded_avg_pool2d::threshold<T>(cuda::warp_max(m).result(), tau);
  const A tt = A(t);
  sum_t sum = 0;
  int32_t count = 0;
  for (int64_t p = lane; p < v.P; p += kWarp) {
    const A val = A(xr[p * v.stride_p]);
    sum += thresholded_avg_pool2d::kept_value(val, tt);
    count += thresholded_avg_pool2d::counted(val, tt);
  }
  sum = cuda::warp_sum(sum);
  count = cuda::warp_sum(count);
  if (lane == 0) {
    out[row] = thresholded_avg_pool2d::mean<T>(sum, count);
    thr[row] = t;
    cnt[row] = count;
  }
}

template <class T>
__global__ void forward_channel_tiles(const T* __restrict__ x, NCP v, double tau, T* out, T* thr, int32_t* cnt) {
  using A = acc_t<T>;
  __shared__ A s_val[kTileP][kTileC];
  __shared__ sum_t s_sum[kTileP][kTileC];
  __shared__ int32_t s_int[kTileP][kTileC];
  const int64_t tiles = cuda::ceil_div(v.C, kTileC);
  const int64_t n = blockIdx.x / tiles;
  const int64_t c = (blockIdx.x % tiles) * kTileC + threadIdx.x;
  const bool active = c < v.C;
  const T* xc = x + n * v.stride_n + c * v.stride_c;

  NanMax<A> m;
  if (active) {
    for (int64_t p = threadIdx.y; p < v.P; p += kTileP) m.add(A(xc[p * v.stride_p]));
  }
  s_val[threadIdx.y][threadIdx.x] = m.value;
  s_int[threadIdx.y][threadIdx.x] = m.has_nan;
  __syncthreads();
  NanMax<A> column;
  for (int i = 0; i < kTileP; ++i) {
    column.merge(NanMax<A>{s_val[i][threadIdx.x], s_int[i][threadIdx.x] != 0});
  }
  __syncthreads();  // the shared arrays are reused below

  const T t = thresholded_avg_pool2d::threshold<T>(column.result(), tau);
  const A tt = A(t);
  sum_t sum = 0;
  int32_t count = 0;
  if (active) {
    for (int64_t p = threadIdx.y; p < v.P; p += kTileP) {
      const A val = A(xc[p * v.stride_p]);
      sum += thresholded_avg_pool2d::kept_value(val, tt);
      count += thresholded_avg_pool2d::counted(val, tt);
    }
  }
  s_sum[threadIdx.y][threadIdx.x] = sum;
  s_int[threadIdx.y][threadIdx.x] = count;
  __syncthreads();
  if (threadIdx.y == 0 && active) {
    for (int i = 1; i < kTileP; ++i) {
      sum += s_sum[i][threadIdx.x];
      count += s_int[i][threadIdx.x];
    }
    const int64_t r = n * v.C + c;
    out[r] = thresholded_avg_pool2d::mean<T>(sum, count);
    thr[r] = t;
    cnt[r] = count;
  }
}

template <class T>
__global__ void backward_rows(const T* __restrict__ grad_out, const T* __restrict__ x, NCP v,
                              const T* __restrict__ thr, const int32_t* __restrict__ cnt, T* grad_x, NCP o) {
  using A = acc_t<T>;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= v.N * v.C) return;
  const int64_t n = row / v.C, c = row % v.C;
  const T* xr = x + n * v.stride_n + c * v.stride_c;
  T* gr = grad_x + n * o.stride_n + c * o.stride_c;
  const A t = A(thr[row]);
  const T kept = thresholded_avg_pool2d::kept_grad(grad_out[row], cnt[row]);
  for (int64_t p = threadIdx.x % kWarp; p < v.P; p += kWarp) {
    gr[p * o.stride_p] = thresholded_avg_pool2d::input_grad(A(xr[p * v.stride_p]), t, kept);
  }
}

template <class T>
__global__ void backward_channel_tiles(const T* __restrict__ grad_out, const T* __restrict__ x, NCP v,
                                       const T* __restrict__ thr, const int32_t* __restrict__ cnt, T* grad_x, NCP o) {
  using A = acc_t<T>;
  const int64_t tiles = cuda::ceil_div(v.C, kTileC);
  const int64_t n = blockIdx.x / tiles;
  const int64_t c = (blockIdx.x % tiles) * kTileC + threadIdx.x;
  if (c >= v.C) return;
  const int64_t r = n * v.C + c;
  const A t = A(thr[r]);
  const T kept = thresholded_avg_pool2d::kept_grad(grad_out[r], cnt[r]);
  const T* xc = x + n * v.stride_n + c * v.stride_c;
  T* gc = grad_x + n * o.stride_n + c * o.stride_c;
  for (int64_t p = threadIdx.y; p < v.P; p += kTileP) {
    gc[p * o.stride_p] = thresholded_avg_pool2d::input_grad(A(xc[p * v.stride_p]), t, kept);
  }
}

dim3 row_grid(const NCP& v) { return dim3(unsigned(cuda::ceil_div(v.N * v.C, kRowsPerBlock))); }
dim3 tile_grid(const NCP& v) { return dim3(unsigned(v.N * cuda::ceil_div(v.C, kTileC))); }
const dim3 kRowBlock(kRowsPerBlock * kWarp);
const dim3 kTileBlock(kTileC, kTileP);

std::tuple<Tensor, Tensor, Tensor> thresholded_avg_pool2d_cuda(Tensor x, double tau) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const thresholded_avg_pool2d::ForwardIO io = thresholded_avg_pool2d::prepare_forward(x);
  if (io.x.numel() == 0) return {io.out, io.thr, io.cnt};
  const NCP& v = io.v;
  const cudaStream_t stream = cuda::current_stream(io.x);
  dispatch_floating(io.x.scalar_type(), thresholded_avg_pool2d::kOp, [&](auto tag) {
    using T = decltype(tag);
    const T* x_ptr = io.x.const_data_ptr<T>();
    T* out_ptr = io.out.mutable_data_ptr<T>();
    T* thr_ptr = io.thr.mutable_data_ptr<T>();
    int32_t* cnt_ptr = io.cnt.mutable_data_ptr<int32_t>();
    if (v.channels_inner()) {
      forward_channel_tiles<T><<<tile_grid(v), kTileBlock, 0, stream>>>(x_ptr, v, tau, out_ptr, thr_ptr, cnt_ptr);
    } else {
      forward_rows<T><<<row_grid(v), kRowBlock, 0, stream>>>(x_ptr, v, tau, out_ptr, thr_ptr, cnt_ptr);
    }
  });
  cuda::check_launch(thresholded_avg_pool2d::kOp);
  return {io.out, io.thr, io.cnt};
}

Tensor thresholded_avg_pool2d_backward_cuda(Tensor grad_out, Tensor x, Tensor threshold, Tensor count) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const thresholded_avg_pool2d::BackwardIO io = thresholded_avg_pool2d::prepare_backward(grad_out, x, threshold, count);
  if (io.x.numel() == 0) return io.grad_x;
  const NCP &v = io.v, &o = io.o;
  const cudaStream_t stream = cuda::current_stream(io.x);
  dispatch_floating(io.x.scalar_type(), thresholded_avg_pool2d::kOp, [&](auto tag) {
    using T = decltype(tag);
    const T* grad_out_ptr = io.grad_out.const_data_ptr<T>();
    const T* x_ptr = io.x.const_data_ptr<T>();
    const T* thr_ptr = io.thr.const_data_ptr<T>();
    const int32_t* cnt_ptr = io.cnt.const_data_ptr<int32_t>();
    T* grad_x_ptr = io.grad_x.mutable_data_ptr<T>();
    if (v.channels_inner() && o.channels_inner()) {
      backward_channel_tiles<T>
          <<<tile_grid(v), kTileBlock, 0, stream>>>(grad_out_ptr, x_ptr, v, thr_ptr, cnt_ptr, grad_x_ptr, o);
    } else {
      backward_rows<T><<<row_grid(v), kRowBlock, 0, stream>>>(grad_out_ptr, x_ptr, v, thr_ptr, cnt_ptr, grad_x_ptr, o);
    }
  });
  cuda::check_launch(thresholded_avg_pool2d::kOp);
  return io.grad_x;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("thresholded_avg_pool2d", TORCH_BOX(&thresholded_avg_pool2d_cuda));
  m.impl("_thresholded_avg_pool2d_backward", TORCH_BOX(&thresholded_avg_pool2d_backward_cuda));
}

}  // namespace camfast
