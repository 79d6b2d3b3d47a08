// Argument checks of every camfast:: op, run before any kernel or allocation.
//
// The Python wrappers validate first (ValueError/TypeError); these guard the ops themselves, which
// exported graphs, autograd and users call directly. Each op's contract (csrc/ops/<stem>.h) checks
// every tensor argument's device, shape and dtype with one ArgCheck; the fake kernels check the
// same with the same messages (camfast/_checks.py), so a traced call fails where an eager one does.
#pragma once

#include <sstream>
#include <string>

#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/HeaderOnlyArrayRef.h>

namespace camfast {

using Dtypes = torch::headeronly::HeaderOnlyArrayRef<torch::headeronly::ScalarType>;
using Sizes = torch::headeronly::IntHeaderOnlyArrayRef;

// A size an argument may take freely (an image's height beside a map's, say).
constexpr int64_t kAnySize = -1;

inline constexpr torch::headeronly::ScalarType kFloating[] = {
    torch::headeronly::ScalarType::Half, torch::headeronly::ScalarType::BFloat16,
    torch::headeronly::ScalarType::Float, torch::headeronly::ScalarType::Double};

namespace detail {

// torch's Python names (float32, not Float), as the fake kernels print them.
inline const char* dtype_name(torch::headeronly::ScalarType t) {
  using torch::headeronly::ScalarType;
  switch (t) {
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Char: return "int8";
    case ScalarType::Short: return "int16";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::Bool: return "bool";
    default: return torch::headeronly::toString(t);
  }
}

inline std::string device_name(const torch::stable::Device& d) {
  using torch::headeronly::DeviceType;
  const DeviceType type = d.type();
  std::string name = type == DeviceType::CPU    ? "cpu"
                     : type == DeviceType::CUDA ? "cuda"
                     : type == DeviceType::Meta ? "meta"
                                                : "device type " + std::to_string(int(type));
  return d.has_index() && type != DeviceType::CPU ? name + ":" + std::to_string(d.index()) : name;
}

// [4, 8, *]: kAnySize prints as *.
inline std::string shape_string(Sizes sizes) {
  std::ostringstream out;
  out << "[";
  for (size_t d = 0; d < sizes.size(); ++d) {
    out << (d ? ", " : "");
    if (sizes[d] == kAnySize) out << "*";
    else out << sizes[d];
  }
  out << "]";
  return out.str();
}

// "float32", "bool or uint8", "float16, bfloat16, float32 or float64".
inline std::string dtypes_string(Dtypes dtypes) {
  std::string out;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    out += i == 0 ? "" : i + 1 == dtypes.size() ? " or " : ", ";
    out += dtype_name(dtypes[i]);
  }
  return out;
}

inline bool contains(Dtypes dtypes, torch::headeronly::ScalarType t) {
  for (auto d : dtypes) {
    if (d == t) return true;
  }
  return false;
}

}  // namespace detail

// The checks of one call of an op. The anchor is the argument the others are measured against: it
// fixes the device every tensor argument must be on, and the caller derives the others' sizes and
// dtypes from it. Constructing the check checks the anchor itself:
//
//   const ArgCheck check(kBackward, x, "x", 4, kFloating);
//   check(grad_out, "grad_out", {x.size(0), x.size(1)}, {x.scalar_type()});
class ArgCheck {
 public:
  ArgCheck(const char* op, const torch::stable::Tensor& anchor, const char* anchor_name, int64_t rank, Dtypes dtypes)
      : op_(op), anchor_name_(anchor_name), device_(anchor.device()) {
    const int64_t any[] = {kAnySize, kAnySize, kAnySize, kAnySize, kAnySize};
    STD_TORCH_CHECK(rank <= 5, op, ": ArgCheck handles up to 5 dimensions");
    (*this)(anchor, anchor_name, Sizes(any, size_t(rank)), dtypes);
  }

  // Throws naming `name` unless t is on the anchor's device, has `sizes` (kAnySize: any size in
  // that dimension, but that many dimensions) and one of `dtypes`.
  const ArgCheck& operator()(const torch::stable::Tensor& t, const char* name, Sizes sizes, Dtypes dtypes) const {
    STD_TORCH_CHECK(t.device() == device_, op_, ": ", name, " must be on the device of ", anchor_name_, " (",
                    detail::device_name(device_), "), got ", detail::device_name(t.device()));
    const Sizes actual = t.sizes();
    bool free = true, match = actual.size() == sizes.size();
    for (size_t d = 0; d < sizes.size(); ++d) {
      free = free && sizes[d] == kAnySize;
      match = match && (sizes[d] == kAnySize || sizes[d] == actual[d]);
    }
    STD_TORCH_CHECK(!free || match, op_, ": ", name, " must be ", sizes.size(), "-D, got ", actual.size(), "-D");
    STD_TORCH_CHECK(match, op_, ": ", name, " must have shape ", detail::shape_string(sizes), ", got ",
                    detail::shape_string(actual));
    STD_TORCH_CHECK(detail::contains(dtypes, t.scalar_type()), op_, ": ", name, " must be ",
                    detail::dtypes_string(dtypes), ", got ", detail::dtype_name(t.scalar_type()));
    return *this;
  }

 private:
  const char* op_;
  const char* anchor_name_;
  torch::stable::Device device_;
};

}  // namespace camfast
