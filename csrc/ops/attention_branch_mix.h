// The torch-side contract of attention_branch_mix, shared by the CPU and CUDA implementations:
// argument checks, the [N, C, P] views and the allocation of every output.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"

namespace camfast::attention_branch_mix {

using torch::stable::Tensor;

constexpr const char* kOp = "camfast::attention_branch_mix";
constexpr const char* kBackward = "camfast::_attention_branch_mix_backward";

// features is the schema's g (the paper's g(x)); error messages use the schema's names.
inline ArgCheck check_inputs(const char* op, const Tensor& features, const Tensor& m) {
  const ArgCheck check(op, features, "g", 4, kFloating);
  check(m, "m", {features.size(0), 1, features.size(2), features.size(3)}, {features.scalar_type()});
  return check;
}

struct ForwardIO {
  Tensor features;  // copied only when its H and W strides do not merge (m likewise)
  NCP v;            // features as [N, C, P]
  Tensor m;
  NCP mv;           // m as [N, 1, P]
  Tensor out;       // laid out like features
  NCP o;
};

inline ForwardIO prepare_forward(Tensor features, Tensor m) {
  check_inputs(kOp, features, m);
  features = with_mergeable_hw(features);
  m = with_mergeable_hw(m);
  const NCP v = ncp_view(features);
  Tensor out = empty_nchw_like(features, v);
  return {features, v, m, ncp_view(m), out, ncp_view(out)};
}

struct BackwardIO {
  Tensor grad_out;
  NCP g;                  // grad_out as [N, C, P]
  Tensor features;
  NCP v;                  // features as [N, C, P]
  Tensor m;
  NCP mv;                 // m as [N, 1, P]
  Tensor grad_features;   // laid out like features
  NCP o;
  Tensor grad_m;          // [N, 1, H, W] contiguous
};

inline BackwardIO prepare_backward(Tensor grad_out, Tensor features, Tensor m) {
  const ArgCheck check = check_inputs(kBackward, features, m);
  check(grad_out, "grad_out", features.sizes(), {features.scalar_type()});
  grad_out = with_mergeable_hw(grad_out);
  features = with_mergeable_hw(features);
  m = with_mergeable_hw(m);
  const NCP v = ncp_view(features);
  Tensor grad_features = empty_nchw_like(features, v);
  return {grad_out, ncp_view(grad_out), features, v, m, ncp_view(m), grad_features, ncp_view(grad_features),
          torch::stable::new_empty(m, {v.N, 1, m.size(2), m.size(3)})};
}

}  // namespace camfast::attention_branch_mix
