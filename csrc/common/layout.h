// [N, C, H, W] tensors seen as [N, C, P] with P = H * W.
//
// NCHW, channels_last and channel- or batch-sliced inputs all flatten H and W into one strided
// axis without a copy, so kernels read them in place. Only inputs whose H and W strides do not
// merge (a sliced or transposed spatial axis) are copied to contiguous first.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "dispatch.h"
#include "memory.h"

namespace camfast {

struct NCP {
  int64_t N, C, P;     // sizes
  int64_t stride_n, stride_c, stride_p;  // in elements

  // Channels are the innermost axis: loops vectorise over C instead of over P.
  bool channels_inner() const { return stride_c == 1 && P > 1 && stride_p != 1; }
};

inline bool spatial_axes_merge(const torch::stable::Tensor& x) {
  return x.size(2) == 1 || x.size(3) == 1 || x.stride(2) == x.stride(3) * x.size(3);
}

// x itself when its spatial axes merge, else a contiguous copy.
inline torch::stable::Tensor with_mergeable_hw(const torch::stable::Tensor& x) {
  return spatial_axes_merge(x) ? x : torch::stable::contiguous(x);
}

inline NCP ncp_view(const torch::stable::Tensor& x) {
  const int64_t W = x.size(3);
  const int64_t stride_p = x.size(3) == 1 ? x.stride(2) : x.stride(3);
  return NCP{x.size(0), x.size(1), x.size(2) * W, x.stride(0), x.stride(1), stride_p};
}

// An uninitialised tensor shaped like x, channels_last when x's channels are innermost (large
// CPU outputs reuse freed ones: see memory.h).
inline torch::stable::Tensor empty_nchw_like(const torch::stable::Tensor& x, const NCP& v,
                                             std::optional<ScalarType> dtype = std::nullopt) {
  const auto sizes = x.sizes();
  return empty_output(x, {sizes.begin(), sizes.end()}, dtype ? *dtype : x.scalar_type(), v.channels_inner());
}

}  // namespace camfast
