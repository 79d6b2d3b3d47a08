// The torch-side contract of weighted_channel_sum, shared by the CPU and CUDA implementations:
// argument checks, the method's name, the [N, K, P] views of act and grad and the output.
#pragma once

#include <iterator>
#include <string>
#include <type_traits>

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"
#include "../kernels/weighted_channel_sum.cuh"

namespace camfast::weighted_channel_sum {

using torch::stable::Tensor;

constexpr const char* kOp = "camfast::weighted_channel_sum";

// The names of camfast.weighted_channel_sum's `method`, in the order of Method.
constexpr const char* kMethodNames[] = {"grad-cam",  "xgrad-cam",    "grad-cam++", "grad-cam++/grad-cam",
                                        "hires-cam", "element-wise", "layer-cam"};

inline Method parse_method(const std::string& name) {
  const int count = int(std::size(kMethodNames));
  int i = 0;
  while (i < count && name != kMethodNames[i]) ++i;
  STD_TORCH_CHECK(i < count, kOp, ": method must be one of grad-cam, xgrad-cam, grad-cam++, grad-cam++/grad-cam, ",
                  "hires-cam, element-wise, layer-cam; got '", name, "'");
  return Method(i);
}

// f(std::integral_constant<Method, m>) for the runtime value m.
template <class F> void dispatch_method(Method m, const F& f) {
  switch (m) {
    case Method::grad_cam: return f(std::integral_constant<Method, Method::grad_cam>{});
    case Method::xgrad_cam: return f(std::integral_constant<Method, Method::xgrad_cam>{});
    case Method::grad_cam_pp: return f(std::integral_constant<Method, Method::grad_cam_pp>{});
    case Method::grad_cam_pp_gradcam: return f(std::integral_constant<Method, Method::grad_cam_pp_gradcam>{});
    case Method::hires_cam: return f(std::integral_constant<Method, Method::hires_cam>{});
    case Method::element_wise: return f(std::integral_constant<Method, Method::element_wise>{});
    default: return f(std::integral_constant<Method, Method::layer_cam>{});
  }
}

struct IO {
  Tensor act;       // copied only when its H and W strides do not merge
  NCP a;            // act as [N, K, P]
  Tensor grad;      // [T, N, K, h, w] (a 4-D grad gets T = 1), copied only when H and W do not merge
  NCP g;            // one class of grad as [N, K, P]
  int64_t T;        // classes
  int64_t stride_t; // between classes, in elements
  Method method;
  Tensor out;       // [N, h, w] or [T, N, h, w], contiguous, act's dtype

  int64_t images() const { return T * a.N; }
  // Image i = t * N + n: its offsets into act and grad.
  int64_t act_offset(int64_t i) const { return (i % a.N) * a.stride_n; }
  int64_t grad_offset(int64_t i) const { return (i / a.N) * stride_t + (i % a.N) * g.stride_n; }
};

// grad with a class axis in front, its H and W merged into one strided axis (else copied).
inline Tensor with_class_axis(const Tensor& grad) {
  Tensor g = grad.dim() == 4 ? torch::stable::unsqueeze(grad, 0) : grad;
  const bool merge = g.size(3) == 1 || g.size(4) == 1 || g.stride(3) == g.stride(4) * g.size(4);
  return merge ? g : torch::stable::contiguous(g);
}

inline IO prepare(Tensor act, const Tensor& grad, const std::string& method, double eps) {
  const ArgCheck check(kOp, act, "act", 4, kFloating);
  STD_TORCH_CHECK(grad.dim() == 4 || grad.dim() == 5, kOp,
                  ": grad must be 4-D [N, K, h, w] or 5-D [T, N, K, h, w], got ", grad.dim(), "-D");
  const int64_t N = act.size(0), K = act.size(1), h = act.size(2), w = act.size(3);
  if (grad.dim() == 4) check(grad, "grad", {N, K, h, w}, {act.scalar_type()});
  else check(grad, "grad", {kAnySize, N, K, h, w}, {act.scalar_type()});
  STD_TORCH_CHECK(act.size(2) > 0 && act.size(3) > 0, kOp, ": act must have h > 0 and w > 0");
  STD_TORCH_CHECK(eps >= 0, kOp, ": eps must lie in [0, inf], got ", eps);  // NaN fails too
  const Method m = parse_method(method);
  act = with_mergeable_hw(act);
  const Tensor g5 = with_class_axis(grad);
  const NCP g{N, K, h * w, g5.stride(1), g5.stride(2), w == 1 ? g5.stride(3) : g5.stride(4)};
  Tensor out = grad.dim() == 4 ? torch::stable::new_empty(act, {N, h, w})
                               : torch::stable::new_empty(act, {grad.size(0), N, h, w});
  return {act, ncp_view(act), g5, g, g5.size(0), g5.stride(0), m, out};
}

}  // namespace camfast::weighted_channel_sum
