// Attention-based dropout on CUDA: forward and backward, NCHW and channels_last in place.
//
// Forward: (1) per-pixel channel sums give each sample's map (sigmoid of the mean, or the mean
// itself in the drop branch); (2) one block per drop sample turns its mean into the mask;
// (3) an elementwise pass scales x. Backward: the channel sums of g * x give the importance
// branch's per-pixel shift, then the same elementwise pass writes g * selected + shift. The branch
// flags stay on the device: no host synchronisation.
#include <tuple>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../kernels/adl.cuh"
#include "../ops/adl.h"
#include "cuda_utils.cuh"
#include "pixel_tiles.cuh"

namespace camfast {
namespace {

using torch::stable::Tensor;

constexpr int kThreads = 256;  // threads per block in the scaling kernel

// Per-pixel result of the channel sums. Forward (kBackward false): sel = the mean in the drop
// branch, else its sigmoid. Backward: shift = 0 in the drop branch, else s (1 - s) / C * sum g x.
template <class T, bool kBackward>
__device__ __forceinline__ void finish_pixel(sum_t sum, int64_t i, int64_t channels, bool drop, T* sel,
                                             acc_t<T>* shift) {
  if constexpr (kBackward) {
    shift[i] = drop ? acc_t<T>(0) : acc_t<T>(adl::importance_shift(sum_t(sel[i]), sum, channels));
  } else {
    const T a = adl::channel_mean<T>(sum, channels);
    sel[i] = drop ? a : adl::importance(a);
  }
}

// Sum over channels of x (times y when kBackward) per pixel, a tile of pixels per block with
// lanes along the contiguous axis (pixel_tiles.cuh); kChannelsInner: channels innermost.
template <class T, bool kChannelsInner, bool kBackward>
__global__ void channel_sums(const T* __restrict__ x, NCP v, const T* __restrict__ y, NCP yv,
                             const uint8_t* __restrict__ drop, T* sel, acc_t<T>* shift) {
  using A = acc_t<T>;
  using Tile = cuda::PixelTile<kChannelsInner>;
  const Tile tile(v.P);
  const bool active = tile.p < v.P;
  const bool is_drop = drop[tile.n] != 0;
  sum_t sum = 0;
  if (active && !(kBackward && is_drop)) {  // the drop branch's gradient needs no sums
    const T* x_pixel = x + tile.n * v.stride_n + tile.p * v.stride_p;
    const T* y_pixel = kBackward ? y + tile.n * yv.stride_n + tile.p * yv.stride_p : nullptr;
    for (int64_t c = tile.c_first; c < v.C; c += Tile::kStep) {
      const A value = A(x_pixel[c * v.stride_c]);
      sum += kBackward ? value * A(y_pixel[c * yv.stride_c]) : value;
    }
  }
  sum = tile.channel_sum(sum);  // every thread takes part: the reduction may synchronise the block
  if (active && tile.c_first == 0) finish_pixel<T, kBackward>(sum, tile.n * v.P + tile.p, v.C, is_drop, sel, shift);
}

// One block per sample: a drop sample's mean map becomes [a < ratio * max a].
template <class T>
__global__ void drop_mask(T* sel, int64_t P, const uint8_t* __restrict__ drop, double ratio) {
  using A = acc_t<T>;
  constexpr int kBlock = cuda::kLanes * cuda::kGroups;
  const int64_t n = blockIdx.x;
  if (drop[n] == 0) return;  // the whole block leaves
  T* row = sel + n * P;
  NanMax<A> m;
  const int first = threadIdx.y * cuda::kLanes + threadIdx.x;
  for (int64_t p = first; p < P; p += kBlock) m.add(A(row[p]));
  const T t = adl::threshold<T>(cuda::block_max(m), ratio);
  for (int64_t p = first; p < P; p += kBlock) row[p] = adl::drop_mask(row[p], t);
}

// out = in * sel (+ shift), sel and shift per pixel. One block per row of out's innermost axis:
// the pixels of one (n, c) in NCHW, the channels of one (n, p) in channels_last, so the index
// arithmetic is one division per block, not per element.
template <class T>
__global__ void scale(const T* __restrict__ in, NCP v, const T* __restrict__ sel, const acc_t<T>* __restrict__ shift,
                      T* out, NCP o, bool channels_inner) {
  using A = acc_t<T>;
  const int64_t rows_per_sample = channels_inner ? v.P : v.C;
  const int64_t n = blockIdx.x / rows_per_sample, r = blockIdx.x % rows_per_sample;
  const int64_t length = channels_inner ? v.C : v.P;
  for (int64_t e = threadIdx.x; e < length; e += kThreads) {
    const int64_t c = channels_inner ? e : r, p = channels_inner ? r : e;
    const int64_t pixel = n * v.P + p;
    const A value = A(in[n * v.stride_n + c * v.stride_c + p * v.stride_p]);
    out[n * o.stride_n + c * o.stride_c + p * o.stride_p] =
        adl::scaled<T>(value, A(sel[pixel]), shift ? shift[pixel] : A(0));
  }
}

// Channel sums over x (and y) into sel or shift, with the tiles that fit x's layout.
template <class T, bool kBackward>
void launch_sums(const T* x, const NCP& v, const T* y, const NCP& yv, const uint8_t* drop, T* sel, acc_t<T>* shift,
                 cudaStream_t stream) {
  if (v.channels_inner()) {
    channel_sums<T, true, kBackward>
        <<<cuda::PixelTile<true>::grid(v), cuda::kTileBlock, 0, stream>>>(x, v, y, yv, drop, sel, shift);
  } else {
    channel_sums<T, false, kBackward>
        <<<cuda::PixelTile<false>::grid(v), cuda::kTileBlock, 0, stream>>>(x, v, y, yv, drop, sel, shift);
  }
}

template <class T>
void launch_scale(const T* in, const NCP& v, const T* sel, const acc_t<T>* shift, T* out, const NCP& o,
                  cudaStream_t stream) {
  const bool channels_inner = o.channels_inner();
  const int64_t rows = v.N * (channels_inner ? v.P : v.C);
  scale<T><<<unsigned(rows), kThreads, 0, stream>>>(in, v, sel, shift, out, o, channels_inner);
}

std::tuple<Tensor, Tensor> adl_cuda(Tensor x, Tensor drop, double threshold) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const adl::ForwardIO io = adl::prepare_forward(x, drop);
  const NCP &v = io.v, &o = io.o;
  if (v.N * v.P == 0) return {io.out, io.sel};
  const cudaStream_t stream = cuda::current_stream(io.x);
  const auto* flags = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  dispatch_floating(io.x.scalar_type(), adl::kOp, [&](auto tag) {
    using T = decltype(tag);
    const T* x_ptr = io.x.const_data_ptr<T>();
    T* sel_ptr = io.sel.mutable_data_ptr<T>();
    launch_sums<T, false>(x_ptr, v, nullptr, v, flags, sel_ptr, nullptr, stream);
    drop_mask<T><<<unsigned(v.N), cuda::kTileBlock, 0, stream>>>(sel_ptr, v.P, flags, threshold);
    if (v.C > 0) launch_scale<T>(x_ptr, v, sel_ptr, nullptr, io.out.mutable_data_ptr<T>(), o, stream);
  });
  cuda::check_launch(adl::kOp);
  return {io.out, io.sel};
}

Tensor adl_backward_cuda(Tensor grad_out, Tensor x, Tensor selected, Tensor drop) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const adl::BackwardIO io = adl::prepare_backward(grad_out, x, selected, drop);
  const NCP &gv = io.g, &v = io.v, &o = io.o;
  if (io.x.numel() == 0) return io.grad_x;
  const cudaStream_t stream = cuda::current_stream(io.x);
  const auto* flags = static_cast<const uint8_t*>(io.drop.const_data_ptr());
  const bool wide = io.x.scalar_type() == ScalarType::Double;
  Tensor shift = torch::stable::new_empty(io.x, {v.N, v.P}, wide ? ScalarType::Double : ScalarType::Float);
  dispatch_floating(io.x.scalar_type(), adl::kOp, [&](auto tag) {
    using T = decltype(tag);
    const T* grad_out_ptr = io.grad_out.const_data_ptr<T>();
    T* sel_ptr = const_cast<T*>(io.sel.const_data_ptr<T>());  // read only in the backward sums
    auto* shift_ptr = shift.mutable_data_ptr<acc_t<T>>();
    launch_sums<T, true>(io.x.const_data_ptr<T>(), v, grad_out_ptr, gv, flags, sel_ptr, shift_ptr, stream);
    launch_scale<T>(grad_out_ptr, gv, sel_ptr, shift_ptr, io.grad_x.mutable_data_ptr<T>(), o, stream);
  });
  cuda::check_launch(adl::kOp);
  return io.grad_x;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CUDA, m) {
  m.impl("adl", TORCH_BOX(&adl_cuda));
  m.impl("_adl_backward", TORCH_BOX(&adl_backward_cuda));
}

}  // namespace camfast
