// Every camfast:: schema, written once. CPU and CUDA files only register implementations.
//
// Forward ops return the small per-row or per-pixel statistics their backward needs beside the
// result; the Python wrappers hide them. Backward ops are private (leading underscore) and are
// called only from the autograd registrations in camfast/_registrations.py.
#include <Python.h>

#include <string>

#include <torch/csrc/stable/library.h>

// Importing camfast._C loads this library, whose static initialisers register the ops.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

namespace {

// What was compiled, for camfast.show_config(): "torch=<version>;cuda_archs=<a;b>".
std::string build_info(int64_t /*unused*/) {
  return std::string("torch=") + CAMFAST_BUILT_TORCH + ";cuda_archs=" + CAMFAST_CUDA_ARCHS;
}

}  // namespace

STABLE_TORCH_LIBRARY(camfast, m) {
  m.def("_build_info(int unused=0) -> str");

  // Thresholded average pooling: (out [N, C], threshold [N, C], count [N, C] int32).
  m.def("thresholded_avg_pool2d(Tensor x, float tau) -> (Tensor, Tensor, Tensor)");
  m.def("_thresholded_avg_pool2d_backward(Tensor grad_out, Tensor x, Tensor threshold, Tensor count) -> Tensor");

  // Score-CAM masked inputs: (masks [N, K, C, H, W] contiguous, constant-map flags [N, K] bool).
  // Not differentiable (explainer inputs); no backward op.
  m.def("score_cam_masks(Tensor act, Tensor image, bool align_corners, bool normalize_feature) -> (Tensor, Tensor)");

  // The gradient CAM methods' raw map: [N, h, w] for grad [N, K, h, w], [T, N, h, w] for grad
  // [T, N, K, h, w], contiguous. method: a name of camfast.weighted_channel_sum's; eps: XGrad-CAM's.
  // Not differentiable (an explainer's output); no backward op.
  m.def("weighted_channel_sum(Tensor act, Tensor grad, str method, float eps) -> Tensor");

  // Attention-based dropout: (out like x, selected [N, 1, H, W]: the map x was multiplied by).
  // drop [N] (bool or uint8) picks each sample's branch: the drop mask, else the importance map.
  m.def("adl(Tensor x, Tensor drop, float threshold) -> (Tensor, Tensor)");
  m.def("_adl_backward(Tensor grad_out, Tensor x, Tensor selected, Tensor drop) -> Tensor");

  // GGAM channel-spatial attention: (out [N, C, H, W], attention map t [N, 1, H, W] float32/64).
  m.def("channel_spatial_attention(Tensor a, Tensor s, bool softmax) -> (Tensor, Tensor)");
  m.def("_channel_spatial_attention_backward(Tensor grad_out, Tensor a, Tensor s, Tensor t, bool softmax) "
        "-> (Tensor, Tensor)");

  // ABN attention mix (1 + m) * g; the backward needs only the inputs.
  m.def("attention_branch_mix(Tensor g, Tensor m) -> Tensor");
  m.def("_attention_branch_mix_backward(Tensor grad_out, Tensor g, Tensor m) -> (Tensor, Tensor)");

  // Spatial softmax and soft-argmax: (out, row_max [N, C], row_sum [N, C]), the statistics in the
  // accumulation dtype (float32, float64 for float64 x): max of x / T and sum of exp(x / T - max).
  m.def("spatial_softmax2d(Tensor x, float temperature) -> (Tensor, Tensor, Tensor)");
  m.def("_spatial_softmax2d_backward(Tensor grad_out, Tensor x, Tensor row_max, Tensor row_sum, "
        "float temperature) -> Tensor");
  // The soft-argmax returns (E_x, E_y) [N, C, 2] in the accumulation dtype too.
  m.def("spatial_soft_argmax2d(Tensor x, float temperature, bool normalized_coordinates) -> (Tensor, Tensor, Tensor)");
  m.def("_spatial_soft_argmax2d_backward(Tensor grad_out, Tensor x, Tensor out, Tensor row_max, Tensor row_sum, "
        "float temperature, bool normalized_coordinates) -> Tensor");

  // MaxBoxAcc sweep of camfast.wsol, per map and uint8 level k in 0..255: (best IoU [B, 256]
  // float64, resolved [B, 256] bool: false where the largest contour needs OpenCV's contourArea).
  m.def("wsol_box_sweep(Tensor q, Tensor gt_boxes, Tensor gt_count, bool multi_contour) -> (Tensor, Tensor)");

  // ROAD's linear imputation of camfast.metrics (images [B, C, H, W] float64, unknown [B, H, W]
  // bool): the images with the unknown pixels solved for, float64, no noise.
  m.def("road_impute(Tensor images, Tensor unknown, float rtol, int max_iter) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(camfast, CompositeExplicitAutograd, m) {
  m.impl("_build_info", TORCH_BOX(&build_info));
}
