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

constexpr const char* kOp = "thresholded_avg_pool2d";

struct ForwardIO {
  Tensor x;    // the input, copied only when its H and W strides do not merge
  NCP v;       // x as [N, C, P]
  Tensor out;  // [N, C], x's dtype
  Tensor thr;  // [N, C], x's dtype: the threshold tau * max of each row
  Tensor cnt;  // [N, C], int32: the count the mean divides by, before max(1, .)
};

inline ForwardIO prepare_forward(Tensor x) {
  check_rank(x, 4, kOp, "x");
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
  check_rank(x, 4, kOp, "x");
  check_rank(grad_out, 2, kOp, "grad_out");
  check_same_dtype(grad_out, x, kOp, "grad_out", "x");
  x = with_mergeable_hw(x);
  const NCP v = ncp_view(x);
  Tensor grad_x = empty_nchw_like(x, v);
  return {torch::stable::contiguous(grad_out), x, torch::stable::contiguous(thr), torch::stable::contiguous(cnt),
          v, grad_x, ncp_view(grad_x)};
}

}  // namespace camfast::thresholded_avg_pool2d
