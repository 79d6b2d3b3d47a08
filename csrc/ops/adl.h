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

constexpr const char* kOp = "camfast::adl";
constexpr const char* kBackward = "camfast::_adl_backward";

// drop: one flag per sample, bool or uint8 (both one byte, read as uint8_t).
inline void check_drop(const ArgCheck& check, const Tensor& drop, int64_t N) {
  check(drop, "drop", {N}, {ScalarType::Bool, ScalarType::Byte});
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
  const ArgCheck check(kOp, x, "x", 4, kFloating);
  check_drop(check, drop, x.size(0));
  x = with_mergeable_hw(x);
  const NCP v = ncp_view(x);
  Tensor out = empty_nchw_like(x, v);
  Tensor sel = torch::stable::new_empty(x, {v.N, 1, x.size(2), x.size(3)});
  return {x, v, torch::stable::contiguous(drop), out, ncp_view(out), sel};
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
  const ArgCheck check(kBackward, x, "x", 4, kFloating);
  check(grad_out, "grad_out", x.sizes(), {x.scalar_type()});
  check(sel, "selected", {x.size(0), 1, x.size(2), x.size(3)}, {x.scalar_type()});
  check_drop(check, drop, x.size(0));
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
  return {grad_out, ncp_view(grad_out), x, v, torch::stable::contiguous(sel), torch::stable::contiguous(drop), grad_x,
          ncp_view(grad_x)};
}

}  // namespace camfast::adl
