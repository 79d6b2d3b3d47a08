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

  // Spatial softmax and soft-argmax: (out, row_max [N, C], row_sum [N, C]), the statistics in the
  // accumulation dtype (float32, float64 for float64 x): max of x / T and sum of exp(x / T - max).
  // The soft-argmax's out, (E_x, E_y) as [N, C, 2], is in the accumulation dtype too.
  m.def("spatial_softmax2d(Tensor x, float temperature) -> (Tensor, Tensor, Tensor)");
  m.def("_spatial_softmax2d_backward(Tensor grad_out, Tensor x, Tensor row_max, Tensor row_sum, "
        "float temperature) -> Tensor");
  // The soft-argmax returns (E_x, E_y) [N, C, 2] in the accumulation dtype too.
  m.def("spatial_soft_argmax2d(Tensor x, float temperature, bool normalized_coordinates) -> (Tensor, Tensor, Tensor)");
  m.def("_spatial_soft_argmax2d_backward(Tensor grad_out, Tensor x, Tensor out, Tensor row_max, Tensor row_sum, "
        "float temperature, bool normalized_coordinates) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(camfast, CompositeExplicitAutograd, m) {
  m.impl("_build_info", TORCH_BOX(&build_info));
}
