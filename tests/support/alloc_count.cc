#include "tests/support/alloc_count.h"

#include <cstddef>
#include <cstdint>

#if defined(__SANITIZE_ADDRESS__)
#define QBRIDGE_ALLOC_COUNT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QBRIDGE_ALLOC_COUNT 0
#endif
#endif
#ifndef QBRIDGE_ALLOC_COUNT
#define QBRIDGE_ALLOC_COUNT 1
#endif

namespace {
// Initial-exec TLS in the executable: reading it never allocates.
thread_local uint64_t allocations = 0;
}  // namespace

namespace qbridge::testing {
bool AllocCounting() { return QBRIDGE_ALLOC_COUNT; }
uint64_t ThreadAllocations() { return allocations; }
}  // namespace qbridge::testing

#if QBRIDGE_ALLOC_COUNT
// glibc's allocator under its internal names (exported for exactly this use).
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);

void* malloc(size_t n) {
  ++allocations;
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  ++allocations;
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  ++allocations;  // every call, shrinking ones included: the hot path should make none
  return __libc_realloc(p, n);
}
void* reallocarray(void* p, size_t n, size_t size) {
  if (size != 0 && n > SIZE_MAX / size) return nullptr;
  return realloc(p, n * size);
}
void free(void* p) { __libc_free(p); }
void* memalign(size_t align, size_t n) {
  ++allocations;
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) { return memalign(align, n); }
int posix_memalign(void** out, size_t align, size_t n) {
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return 22;  // EINVAL
  void* p = memalign(align, n);
  if (p == nullptr) return 12;  // ENOMEM
  *out = p;
  return 0;
}
void* valloc(size_t n) { return memalign(4096, n); }
void* pvalloc(size_t n) { return memalign(4096, (n + 4095) & ~size_t{4095}); }
}
#endif
