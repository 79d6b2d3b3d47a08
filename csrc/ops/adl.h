// The torch-side contract of adl, shared by the CPU and CUDA implementations: argument checks,
// the [N, C, P] views and the allocation of every output.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"

namespace camfast::adl {

using torch::stable::Tensor;

constexpr const char* kOp = "adl";

// drop: one flag per sample, bool or uint8 (both one byte, read as uint8_t), made contiguous.
inline Tensor checked_drop(const Tensor& drop, const Tensor& x) {
  check_rank(drop, 1, kOp, "drop");
  STD_TORCH_CHECK(drop.size(0) == x.size(0), kOp, ": drop must hold one flag per sample");
  STD_TORCH_CHECK(drop.scalar_type() == ScalarType::Bool || drop.scalar_type() == ScalarType::Byte, kOp,
                  ": drop must be bool or uint8");
  check_same_device(drop, x, kOp, "drop", "x");
  return torch::stable::contiguous(drop);
}

struct ForwardIO {
  Tensor x;     // the input, copied only when its H and W strides do not merge
  NCP v;        // x as [N, C, P]
  Tensor drop;  // [N] flags, contiguous
  Tensor out;   // laid out like x
  NCP o;        // out as [N, C, P]
  Tensor sel;   // [N, 1, H, W] contiguous, x's dtype: the map each sample was multiplied by
};

inline ForwardIO prepare_forward(Tensor x, const Tensor& drop) {
  check_rank(x, 4, kOp, "x");
  x = with_mergeable_hw(x);
  const NCP v = ncp_view(x);
  Tensor out = empty_nchw_like(x, v);
  Tensor sel = torch::stable::new_empty(x, {v.N, 1, x.size(2), x.size(3)});
  return {x, v, checked_drop(drop, x), out, ncp_view(out), sel};
}

struct BackwardIO {
  Tensor grad_out;  // copied only when its H and W strides do not merge
  NCP g;            // grad_out as [N, C, P]
  Tensor x;
  NCP v;            // x as [N, C, P]
  Tensor sel, drop;  // contiguous
  Tensor grad_x;    // laid out like x
  NCP o;            // grad_x as [N, C, P]
};

inline BackwardIO prepare_backward(Tensor grad_out, Tensor x, const Tensor& sel, const Tensor& drop) {
  check_rank(x, 4, kOp, "x");
  check_rank(grad_out, 4, kOp, "grad_out");
  check_rank(sel, 4, kOp, "selected");
  check_same_dtype(grad_out, x, kOp, "grad_out", "x");
  check_same_dtype(sel, x, kOp, "selected", "x");
  for (int64_t d = 0; d < 4; ++d) {
    STD_TORCH_CHECK(grad_out.size(d) == x.size(d), kOp, ": grad_out must have the shape of x");
  }
  x = with_mergeable_hw(x);
  const NCP v = ncp_view(x);
  // Kernels walk grad_out, x and grad_x in one order: a grad_out laid out otherwise is copied
  // into x's layout once rather than read across its strides.
  grad_out = with_mergeable_hw(grad_out);
  if (ncp_view(grad_out).channels_inner() != v.channels_inner()) {
    grad_out = torch::stable::contiguous(grad_out, v.channels_inner() ? torch::headeronly::MemoryFormat::ChannelsLast
                                                                      : torch::headeronly::MemoryFormat::Contiguous);
  }
  Tensor grad_x = empty_nchw_like(x, v);
  return {grad_out, ncp_view(grad_out), x, v, torch::stable::contiguous(sel), checked_drop(drop, x), grad_x,
          ncp_view(grad_x)};
}

}  // namespace camfast::adl
