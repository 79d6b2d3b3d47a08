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
}

STABLE_TORCH_LIBRARY_IMPL(camfast, CompositeExplicitAutograd, m) {
  m.impl("_build_info", TORCH_BOX(&build_info));
}
