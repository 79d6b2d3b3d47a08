// Large CPU outputs: reused instead of faulted in anew by every call.
//
// An output of tens of MB is a fresh mapping: the OS faults in and zeroes each 4 KB page on the
// first write, which costs several times an elementwise op itself (on the 2-core CI machine,
// filling a fresh 51 MB tensor takes 19 ms with 4 KB pages, 2.5 ms once mapped). Transparent huge
// pages made those faults 512 times rarer (4-5 ms), and the kernels used to advise them on every
// such output; but two threads faulting huge pages of one mapping at once stall: the first calls of
// a process and about one call in a hundred later took 73-88 ms to fill 51 MB (one thread: 9-11 ms
// every call), though the OS reported no compaction. Populating the advised range from one thread
// first still stalled the first call of 1 process in 6 (benchmarks/NOTES.md, "Latency").
//
// So outputs past glibc's largest mmap threshold (32 MB, where every allocation is a fresh
// mapping) come from a small pool: a freed output's mapping, already faulted in, serves the next
// output of the same size. The first call of each size pays the 4 KB faults, as eager PyTorch
// does on every call; later ones none. The pool's tensors are ordinary CPU tensors (they pickle,
// copy, save and share like any), except that their storage cannot be resized in place.
//
// The environment variable CAMFAST_CPU_OUTPUT_POOL_MB caps the freed outputs the pool keeps
// mapped (default 1024; the oldest is unmapped first); 0 turns the pool off, and outputs larger
// than the cap never enter it. It is read once, at the first large output.
//
// Outputs are allocated before the parallel loops, but a tensor may be freed on any thread
// (autograd's, a data loader's): the pool's lists are guarded by one mutex, held for a list
// operation only, never across mmap or munmap.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "dispatch.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace camfast {

constexpr int64_t kPoolFromBytes = int64_t(32) << 20;
constexpr int64_t kDefaultPoolMB = 1024;

// CAMFAST_CPU_OUTPUT_POOL_MB in bytes, or the default; a bad value is an error at every large output.
inline size_t pool_cap_bytes() {
  static const int64_t mb = [] {
    const char* text = std::getenv("CAMFAST_CPU_OUTPUT_POOL_MB");
    if (text == nullptr || *text == '\0') return kDefaultPoolMB;
    char* end = nullptr;
    errno = 0;
    const long long value = std::strtoll(text, &end, 10);
    STD_TORCH_CHECK(*end == '\0' && errno == 0 && value >= 0 && value <= (int64_t(1) << 40),
                    "CAMFAST_CPU_OUTPUT_POOL_MB: expected a whole number of MB, 0 or more, got '", text, "'");
    return int64_t(value);
  }();
  return size_t(mb) << 20;
}

inline int64_t element_size(ScalarType dtype) {
  int64_t element = 0;
  dispatch_floating(dtype, "empty_output", [&](auto tag) { element = int64_t(sizeof(tag)); });
  return element;
}

#if defined(__linux__)
class OutputPool {
 public:
  // Never destroyed: a tensor may be freed after static destructors have run.
  static OutputPool& instance() {
    static auto* pool = new OutputPool(pool_cap_bytes());
    return *pool;
  }

  // A mapping of `bytes`, faulted in already when a freed output of that size is at hand;
  // nullptr when the OS refuses a new one.
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.rbegin(); it != free_.rend(); ++it) {  // the most recently freed first
        if (it->second != bytes) continue;
        void* data = it->first;
        held_ -= bytes;
        free_.erase(std::next(it).base());
        return data;
      }
    }
    void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return data == MAP_FAILED ? nullptr : data;
  }

  // Keeps a freed output's mapping, unmapping the oldest kept ones past the cap.
  void give(void* data, size_t bytes) {
    std::vector<std::pair<void*, size_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.emplace_back(data, bytes);
      held_ += bytes;
      while (held_ > cap_) {
        evicted.push_back(free_.front());
        held_ -= free_.front().second;
        free_.pop_front();
      }
    }
    for (const auto& [mapping, size] : evicted) munmap(mapping, size);
  }

 private:
  explicit OutputPool(size_t cap) : cap_(cap) {}

  const size_t cap_;
  std::mutex mutex_;
  std::deque<std::pair<void*, size_t>> free_;  // freed outputs, oldest first
  size_t held_ = 0;
};

// Row-major strides over the dimensions in memory order (channels last: N, H, W, C).
inline std::vector<int64_t> dense_strides(const std::vector<int64_t>& sizes, bool channels_last) {
  const size_t rank = sizes.size();
  std::vector<size_t> order(rank);
  for (size_t d = 0; d < rank; ++d) order[d] = d;
  if (channels_last) order = {0, 2, 3, 1};
  std::vector<int64_t> strides(rank);
  int64_t step = 1;
  for (size_t i = rank; i-- > 0;) {
    strides[order[i]] = step;
    step *= std::max<int64_t>(sizes[order[i]], 1);
  }
  return strides;
}
#endif

// An uninitialised output of `sizes`, contiguous or channels_last (4-D), on like's device: from
// the pool on CPU from kPoolFromBytes up to the pool's cap, else from torch's allocator.
inline torch::stable::Tensor empty_output(const torch::stable::Tensor& like, std::vector<int64_t> sizes,
                                          ScalarType dtype, bool channels_last = false) {
  const auto format =
      channels_last ? torch::headeronly::MemoryFormat::ChannelsLast : torch::headeronly::MemoryFormat::Contiguous;
  const auto allocated = [&] {
    return torch::stable::empty(sizes, dtype, std::nullopt, like.device(), std::nullopt, format);
  };
#if defined(__linux__)
  if (!like.is_cpu()) return allocated();
  int64_t bytes = element_size(dtype);
  for (int64_t s : sizes) bytes *= s;
  if (bytes < kPoolFromBytes || size_t(bytes) > pool_cap_bytes()) return allocated();
  auto& pool = OutputPool::instance();
  void* data = pool.take(size_t(bytes));
  if (data == nullptr) return allocated();
  try {
    return torch::stable::from_blob(data, sizes, dense_strides(sizes, channels_last), like.device(), dtype,
                                    [bytes](void* p) { OutputPool::instance().give(p, size_t(bytes)); });
  } catch (...) {
    pool.give(data, size_t(bytes));
    throw;
  }
#else
  return allocated();
#endif
}

}  // namespace camfast
