// The torch-side contract of channel_spatial_attention, shared by the CPU and CUDA
// implementations: argument checks, the [N, C, P] views and the allocation of every output.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"

namespace camfast::channel_spatial_attention {

using torch::stable::Tensor;

constexpr const char* kOp = "camfast::channel_spatial_attention";
constexpr const char* kBackward = "camfast::_channel_spatial_attention_backward";

// s as [N, C] with its strides: it is small and read in place, whatever its layout.
struct Weights {
  int64_t stride_n, stride_c;
};

inline ArgCheck check_inputs(const char* op, const Tensor& a, const Tensor& s) {
  const ArgCheck check(op, a, "a", 4, kFloating);
  check(s, "s", {a.size(0), a.size(1)}, {a.scalar_type()});
  return check;
}

// The attention map t: [N, 1, H, W], contiguous, in the accumulation dtype.
inline Tensor new_map(const Tensor& a) {
  return torch::stable::new_empty(a, {a.size(0), 1, a.size(2), a.size(3)}, acc_scalar_type(a.scalar_type()));
}

struct ForwardIO {
  Tensor a;    // copied only when its H and W strides do not merge
  NCP v;       // a as [N, C, P]
  Tensor s;    // [N, C], any strides
  Weights w;
  Tensor out;  // laid out like a
  NCP o;
  Tensor t;    // the attention map, [N, 1, H, W] contiguous, float32 (float64 for float64 input)
};

inline ForwardIO prepare_forward(Tensor a, const Tensor& s) {
  check_inputs(kOp, a, s);
  a = with_mergeable_hw(a);
  const NCP v = ncp_view(a);
  Tensor out = empty_nchw_like(a, v);
  return {a, v, s, {s.stride(0), s.stride(1)}, out, ncp_view(out), new_map(a)};
}

struct BackwardIO {
  Tensor grad_out;
  NCP g;
  Tensor a;
  NCP v;
  Tensor s;
  Weights w;
  Tensor t;       // contiguous
  Tensor grad_a;  // laid out like a
  NCP o;
  Tensor grad_s;  // [N, C] contiguous
};

inline BackwardIO prepare_backward(Tensor grad_out, Tensor a, const Tensor& s, const Tensor& t) {
  const ArgCheck check = check_inputs(kBackward, a, s);
  check(grad_out, "grad_out", a.sizes(), {a.scalar_type()});
  check(t, "t", {a.size(0), 1, a.size(2), a.size(3)}, {acc_scalar_type(a.scalar_type())});
  grad_out = with_mergeable_hw(grad_out);
  a = with_mergeable_hw(a);
  const NCP v = ncp_view(a);
  Tensor grad_a = empty_nchw_like(a, v);
  return {grad_out, ncp_view(grad_out), a, v, s, {s.stride(0), s.stride(1)}, torch::stable::contiguous(t),
          grad_a, ncp_view(grad_a), torch::stable::new_empty(s, {v.N, v.C})};
}

}  // namespace camfast::channel_spatial_attention
