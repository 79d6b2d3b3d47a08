// The first-touch cost of large CPU outputs.
//
// An output of tens of MB is a fresh mapping: the OS faults in and zeroes each 4 KB page on the
// first write, which costs several times an elementwise op itself (on the 2-core CI machine,
// filling a fresh 51 MB tensor takes 19 ms with 4 KB pages, 4 ms with 2 MB pages, 2.5 ms once
// mapped). Advising transparent huge pages on the buffer before the kernel writes it, as torch
// does for every allocation under THP_MEM_ALLOC_ENABLE=1, makes those faults 512 times rarer.
// Only buffers past glibc's largest mmap threshold (32 MB) are advised: they always own their
// mapping, so the advice never splits the heap's.
#pragma once

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace camfast::cpu {

constexpr uintptr_t kHugePage = uintptr_t(2) << 20;
constexpr int64_t kAdviseFromBytes = int64_t(32) << 20;

// Call before the first write to data[0, bytes). Advice only: it may be refused, and then nothing changes.
inline void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < kAdviseFromBytes) return;
  const auto start = reinterpret_cast<uintptr_t>(data);
  const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (start + uintptr_t(bytes)) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace camfast::cpu
