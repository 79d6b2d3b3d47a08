// The torch-side contract of spatial_softmax2d and spatial_soft_argmax2d, shared by the CPU and
// CUDA implementations: argument checks, [N, C, P] views and the allocation of every output.
//
// Both forwards also return the row statistics the backward needs, in the accumulation dtype
// (float32, or float64 for float64 x): the max of x / T and the sum of exp(x / T - max).
#pragma once

#include <cmath>

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"

namespace camfast::spatial_softmax2d {

using torch::stable::Tensor;

constexpr const char* kSoftmax = "camfast::spatial_softmax2d";
constexpr const char* kSoftmaxBackward = "camfast::_spatial_softmax2d_backward";
constexpr const char* kArgmax = "camfast::spatial_soft_argmax2d";
constexpr const char* kArgmaxBackward = "camfast::_spatial_soft_argmax2d_backward";

inline void check_temperature(double temperature, const char* op) {
  STD_TORCH_CHECK(temperature > 0 && std::isfinite(temperature), op,
                  ": temperature must be a finite number > 0, got ", temperature);
}

inline ScalarType acc_type(ScalarType t) { return t == ScalarType::Double ? t : ScalarType::Float; }

// Row max and row sum, [N, C] each.
struct RowStats {
  Tensor max, sum;
};

inline RowStats new_stats(const Tensor& x) {
  const ScalarType acc = acc_type(x.scalar_type());
  return {torch::stable::new_empty(x, {x.size(0), x.size(1)}, acc),
          torch::stable::new_empty(x, {x.size(0), x.size(1)}, acc)};
}

// row_max and row_sum checked ([N, C] of x, in its accumulation dtype) and made contiguous.
inline RowStats checked_stats(const ArgCheck& check, const Tensor& row_max, const Tensor& row_sum, const Tensor& x) {
  const ScalarType acc = acc_type(x.scalar_type());
  check(row_max, "row_max", {x.size(0), x.size(1)}, {acc});
  check(row_sum, "row_sum", {x.size(0), x.size(1)}, {acc});
  return {torch::stable::contiguous(row_max), torch::stable::contiguous(row_sum)};
}

// An input as read by the kernels: copied only when its H and W strides do not merge.
struct Input {
  Tensor t;
  NCP v;
};

inline Input nchw_input(const Tensor& t) {
  Tensor merged = with_mergeable_hw(t);
  const NCP v = ncp_view(merged);
  return {merged, v};
}

// An output laid out like x (channels_last exactly when x's channels are innermost).
inline Input nchw_output_like(const Input& x) {
  Tensor out = empty_nchw_like(x.t, x.v);
  const NCP o = ncp_view(out);
  return {out, o};
}

struct SoftmaxForwardIO {
  Input x, out;  // out [N, C, H, W] laid out like x
  RowStats stats;
};

inline SoftmaxForwardIO prepare_softmax_forward(const Tensor& x, double temperature) {
  ArgCheck(kSoftmax, x, "x", 4, kFloating);
  check_temperature(temperature, kSoftmax);
  const Input in = nchw_input(x);
  return {in, nchw_output_like(in), new_stats(in.t)};
}

struct SoftmaxBackwardIO {
  Input grad_out, x, grad_x;  // grad_x laid out like x
  RowStats stats;
};

inline SoftmaxBackwardIO prepare_softmax_backward(const Tensor& grad_out, const Tensor& x, const Tensor& row_max,
                                                  const Tensor& row_sum, double temperature) {
  const ArgCheck check(kSoftmaxBackward, x, "x", 4, kFloating);
  check(grad_out, "grad_out", x.sizes(), {x.scalar_type()});
  const RowStats stats = checked_stats(check, row_max, row_sum, x);
  check_temperature(temperature, kSoftmaxBackward);
  const Input in = nchw_input(x);
  return {nchw_input(grad_out), in, nchw_output_like(in), stats};
}

// The soft-argmax returns its coordinates in the accumulation dtype (the Python wrapper rounds
// them to x's dtype), so that its backward, which reads them, loses nothing in float16/bfloat16.
struct ArgmaxForwardIO {
  Input x;
  Tensor out;  // [N, C, 2] contiguous, accumulation dtype: (E_x, E_y) of each row
  RowStats stats;
};

inline ArgmaxForwardIO prepare_argmax_forward(const Tensor& x, double temperature) {
  ArgCheck(kArgmax, x, "x", 4, kFloating);
  check_temperature(temperature, kArgmax);
  const Input in = nchw_input(x);
  return {in, torch::stable::new_empty(in.t, {in.v.N, in.v.C, 2}, acc_type(in.t.scalar_type())), new_stats(in.t)};
}

struct ArgmaxBackwardIO {
  Tensor grad_out, out;  // [N, C, 2] contiguous, accumulation dtype
  Input x, grad_x;       // grad_x laid out like x
  RowStats stats;
};

inline ArgmaxBackwardIO prepare_argmax_backward(const Tensor& grad_out, const Tensor& x, const Tensor& out,
                                                const Tensor& row_max, const Tensor& row_sum, double temperature) {
  const ArgCheck check(kArgmaxBackward, x, "x", 4, kFloating);
  const ScalarType acc = acc_type(x.scalar_type());
  check(grad_out, "grad_out", {x.size(0), x.size(1), 2}, {acc});
  check(out, "out", {x.size(0), x.size(1), 2}, {acc});
  const RowStats stats = checked_stats(check, row_max, row_sum, x);
  check_temperature(temperature, kArgmaxBackward);
  const Input in = nchw_input(x);
  return {torch::stable::contiguous(grad_out), torch::stable::contiguous(out), in, nchw_output_like(in), stats};
}

}  // namespace camfast::spatial_softmax2d
