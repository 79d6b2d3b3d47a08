// dtype dispatch for the four floating types every op accepts.
#pragma once

#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/Half.h>

namespace camfast {

using torch::headeronly::ScalarType;

// Calls f(T{}) with T the C++ type behind `type`.
template <class F> void dispatch_floating(ScalarType type, const char* op, F&& f) {
  switch (type) {
    case ScalarType::Float: return f(float{});
    case ScalarType::Double: return f(double{});
    case ScalarType::Half: return f(torch::headeronly::Half{});
    case ScalarType::BFloat16: return f(torch::headeronly::BFloat16{});
    default:
      STD_TORCH_CHECK(false, op, ": expected float16, bfloat16, float32 or float64, got ",
                      torch::headeronly::toString(type));
  }
}

// The dtype of statistics a forward op saves for its backward: acc_t of the input type.
inline ScalarType acc_scalar_type(ScalarType type) {
  return type == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

}  // namespace camfast
