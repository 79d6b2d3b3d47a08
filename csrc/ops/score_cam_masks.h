// The torch-side contract of score_cam_masks, shared by the CPU and CUDA implementations:
// argument checks, the [N, C, P] view of the image and the allocation of both outputs.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/layout.h"

namespace camfast::score_cam_masks {

using torch::stable::Tensor;

constexpr const char* kOp = "camfast::score_cam_masks";

// act [N, K, h, w] read through its four strides (maps are small; any layout is read in place).
struct ActView {
  int64_t N, K, h, w;
  int64_t stride_n, stride_k, stride_h, stride_w;
};

struct IO {
  Tensor act;
  ActView a;
  Tensor image;    // copied only when its H and W strides do not merge
  NCP img;         // image as [N, C, P]
  int64_t H, W;    // image size
  Tensor out;      // [N, K, C, H, W] contiguous, act's dtype
  Tensor constant; // [N, K] bool

  int64_t maps() const { return a.N * a.K; }
};

inline IO prepare(const Tensor& act, Tensor image) {
  // The image's size, channels included, is free: masks are upsampled to it.
  ArgCheck(kOp, act, "act", 4, kFloating)(image, "image", {act.size(0), kAnySize, kAnySize, kAnySize},
                                          {act.scalar_type()});
  // Every output pixel reads its taps from the map: an empty map has none to read.
  STD_TORCH_CHECK(act.size(2) > 0 && act.size(3) > 0, kOp, ": act must have h > 0 and w > 0");
  image = with_mergeable_hw(image);
  const ActView a{act.size(0), act.size(1), act.size(2), act.size(3),
                  act.stride(0), act.stride(1), act.stride(2), act.stride(3)};
  const int64_t C = image.size(1), H = image.size(2), W = image.size(3);
  return {act, a, image, ncp_view(image), H, W,
          empty_output(act, {a.N, a.K, C, H, W}, act.scalar_type()),
          torch::stable::new_empty(act, {a.N, a.K}, ScalarType::Bool)};
}

}  // namespace camfast::score_cam_masks
