// Argument checks for direct calls of camfast:: ops. The Python wrappers validate first, with
// ValueError/TypeError; these guard the C++ entry points themselves.
#pragma once

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

namespace camfast {

inline void check_rank(const torch::stable::Tensor& t, int64_t rank, const char* op, const char* name) {
  STD_TORCH_CHECK(t.dim() == rank, op, ": ", name, " must be ", rank, "-D, got ", t.dim(), "-D");
}

inline void check_same_device(const torch::stable::Tensor& a, const torch::stable::Tensor& b,
                              const char* op, const char* name_a, const char* name_b) {
  STD_TORCH_CHECK(a.get_device() == b.get_device() && a.is_cuda() == b.is_cuda(), op, ": ", name_a,
                  " and ", name_b, " must be on the same device");
}

inline void check_same_dtype(const torch::stable::Tensor& a, const torch::stable::Tensor& b,
                             const char* op, const char* name_a, const char* name_b) {
  STD_TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
                  " must have the same dtype");
}

}  // namespace camfast
