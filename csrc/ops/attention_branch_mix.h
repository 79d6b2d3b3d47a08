// The torch-side contract of attention_branch_mix, shared by the CPU and CUDA implementations:
// argument checks, the [N, C, P] views and the allocation of every output.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"

namespace camfast::abn {

using torch::stable::Tensor;

constexpr const char* kOp = "attention_branch_mix";

inline void check_inputs(const Tensor& g, const Tensor& m) {
  check_rank(g, 4, kOp, "g");
  check_rank(m, 4, kOp, "m");
  check_same_dtype(g, m, kOp, "g", "m");
  check_same_device(g, m, kOp, "g", "m");
  STD_TORCH_CHECK(m.size(0) == g.size(0) && m.size(1) == 1 && m.size(2) == g.size(2) && m.size(3) == g.size(3),
                  kOp, ": m must have shape [N, 1, H, W] of g");
}

struct ForwardIO {
  Tensor g;    // copied only when its H and W strides do not merge (m likewise)
  NCP v;       // g as [N, C, P]
  Tensor m;
  NCP mv;      // m as [N, 1, P]
  Tensor out;  // laid out like g
  NCP o;
};

inline ForwardIO prepare_forward(Tensor g, Tensor m) {
  check_inputs(g, m);
  g = with_mergeable_hw(g);
  m = with_mergeable_hw(m);
  const NCP v = ncp_view(g);
  Tensor out = empty_nchw_like(g, v);
  return {g, v, m, ncp_view(m), out, ncp_view(out)};
}

struct BackwardIO {
  Tensor grad_out;
  NCP d;
  Tensor g;
  NCP v;
  Tensor m;
  NCP mv;
  Tensor grad_g;  // laid out like g
  NCP o;
  Tensor grad_m;  // [N, 1, H, W] contiguous
};

inline BackwardIO prepare_backward(Tensor grad_out, Tensor g, Tensor m) {
  check_inputs(g, m);
  check_rank(grad_out, 4, kOp, "grad_out");
  check_same_dtype(grad_out, g, kOp, "grad_out", "g");
  grad_out = with_mergeable_hw(grad_out);
  g = with_mergeable_hw(g);
  m = with_mergeable_hw(m);
  const NCP v = ncp_view(g);
  Tensor grad_g = empty_nchw_like(g, v);
  return {grad_out, ncp_view(grad_out), g, v, m, ncp_view(m), grad_g, ncp_view(grad_g),
          torch::stable::new_empty(m, {v.N, 1, m.size(2), m.size(3)})};
}

}  // namespace camfast::abn
