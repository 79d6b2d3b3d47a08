// The torch-side contract of thresholded_avg_pool2d, shared by the CPU and CUDA implementations:
// argument checks, the [N, C, P] view of the input and the allocation of every output.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"

namespace camfast::thresholded_avg_pool2d {

using torch::stable::Tensor;

constexpr const char* kOp = "camfast::thresholded_avg_pool2d";
constexpr const char* kBackward = "camfast::_thresholded_avg_pool2d_backward";

struct ForwardIO {
  Tensor x;    // the input, copied only when its H and W strides do not merge
  NCP v;       // x as [N, C, P]
  Tensor out;  // [N, C], x's dtype
  Tensor thr;  // [N, C], x's dtype: the threshold tau * max of each row
  Tensor cnt;  // [N, C], int32: the count the mean divides by, before max(1, .)
};

inline ForwardIO prepare_forward(Tensor x) {
  ArgCheck(kOp, x, "x", 4, kFloating);
  x = with_mergeable_hw(x);
  const NCP v = ncp_view(x);
  return {x, v, torch::stable::new_empty(x, {v.N, v.C}), torch::stable::new_empty(x, {v.N, v.C}),
          torch::stable::new_empty(x, {v.N, v.C}, ScalarType::Int)};
}

struct BackwardIO {
  Tensor grad_out, x, thr, cnt;  // [N, C] tensors contiguous
  NCP v;                         // x as [N, C, P]
  Tensor grad_x;                 // laid out like x
  NCP o;                         // grad_x as [N, C, P]
};

inline BackwardIO prepare_backward(const Tensor& grad_out, Tensor x, const Tensor& thr, const Tensor& cnt) {
  const ArgCheck check(kBackward, x, "x", 4, kFloating);
  const int64_t N = x.size(0), C = x.size(1);
  check(grad_out, "grad_out", {N, C}, {x.scalar_type()});
  check(thr, "threshold", {N, C}, {x.scalar_type()});
  check(cnt, "count", {N, C}, {ScalarType::Int});
  x = with_mergeable_hw(x);
  const NCP v = ncp_view(x);
  Tensor grad_x = empty_nchw_like(x, v);
  return {torch::stable::contiguous(grad_out), x, torch::stable::contiguous(thr), torch::stable::contiguous(cnt),
          v, grad_x, ncp_view(grad_x)};
}

}  // namespace camfast::thresholded_avg_pool2d
