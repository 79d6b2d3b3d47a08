// CUDA glue shared by every kernel file: stream, launch checks, warp and block reductions.
// Only the stable ABI and the CUDA runtime are included, so this compiles against the CPU wheel.
#pragma once

#include <cuda_runtime.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "../kernels/common.cuh"

namespace camfast::cuda {

constexpr int kWarp = 32;

inline cudaStream_t current_stream(const torch::stable::Tensor& t) {
  void* stream = nullptr;
  STD_TORCH_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream) == AOTI_TORCH_SUCCESS,
                  "camfast: cannot get the current CUDA stream");
  return static_cast<cudaStream_t>(stream);
}

inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  STD_TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

CAMFAST_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class A> __device__ __forceinline__ A warp_sum(A v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class A> __device__ __forceinline__ NanMax<A> warp_max(NanMax<A> m) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    NanMax<A> other;
    other.value = __shfl_xor_sync(0xffffffffu, m.value, offset);
    other.has_nan = __shfl_xor_sync(0xffffffffu, int(m.has_nan), offset) != 0;
    m.merge(other);
  }
  return m;
}

}  // namespace camfast::cuda
