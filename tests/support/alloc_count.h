// Counts heap allocations made by the calling thread, for tests that hold a hot path to
// "no allocation per packet". Linking alloc_count.cc into a test binary replaces malloc and
// friends (glibc supports replacing them; every library's calls land here) with wrappers
// that count, then call glibc's own allocator. Not for sanitizer builds: ASan replaces
// malloc itself (Counting() is false there and tests skip).
#pragma once

#include <cstdint>

namespace qbridge::testing {

// Whether this build counts (false under AddressSanitizer).
bool AllocCounting();
// Allocations (malloc, calloc, every realloc, aligned forms) made by this thread since it
// started.
uint64_t ThreadAllocations();

// Allocations made by this thread between construction and Count().
class AllocScope {
 public:
  AllocScope() : start_(ThreadAllocations()) {}
  uint64_t Count() const { return ThreadAllocations() - start_; }

 private:
  uint64_t start_;
};

}  // namespace qbridge::testing
