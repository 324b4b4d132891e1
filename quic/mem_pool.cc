#include "quic/mem_pool.h"

#include <cstdlib>
#include <cstring>

namespace qbridge::quic {
namespace {

// Every block starts with a header naming its class, so the user pointer keeps malloc's
// 16-byte alignment.
struct alignas(16) Header {
  size_t cls;
  size_t size;  // the usable size (for realloc)
};
constexpr size_t kLarge = SIZE_MAX;

Header* HeaderOf(void* p) { return static_cast<Header*>(p) - 1; }

}  // namespace

NgMemPool::NgMemPool() {
  mem_.user_data = this;
  mem_.malloc = [](size_t size, void* self) { return static_cast<NgMemPool*>(self)->Alloc(size); };
  mem_.free = [](void* p, void* self) { static_cast<NgMemPool*>(self)->Free(p); };
  mem_.calloc = [](size_t n, size_t size, void* self) -> void* {
    if (size != 0 && n > SIZE_MAX / size) return nullptr;
    void* p = static_cast<NgMemPool*>(self)->Alloc(n * size);
    if (p != nullptr) std::memset(p, 0, n * size);
    return p;
  };
  mem_.realloc = [](void* p, size_t size, void* self) {
    return static_cast<NgMemPool*>(self)->Realloc(p, size);
  };
}

NgMemPool::~NgMemPool() {
  for (FreeBlock*& head : free_) {
    while (head != nullptr) {
      FreeBlock* next = head->next;
      std::free(HeaderOf(head));
      head = next;
    }
  }
}

size_t NgMemPool::ClassOf(size_t size) {
  size_t cls = 0;
  while (cls < kClasses && (size_t{1} << (kMinShift + cls)) < size) ++cls;
  return cls < kClasses ? cls : kLarge;
}

void* NgMemPool::Alloc(size_t size) {
  const size_t cls = ClassOf(size);
  if (cls != kLarge && free_[cls] != nullptr) {
    FreeBlock* b = free_[cls];
    free_[cls] = b->next;
    ++reused_;
    return b;
  }
  const size_t usable = cls == kLarge ? size : size_t{1} << (kMinShift + cls);
  auto* h = static_cast<Header*>(std::malloc(sizeof(Header) + usable));
  if (h == nullptr) return nullptr;
  ++heap_;
  h->cls = cls;
  h->size = usable;
  return h + 1;
}

void NgMemPool::Free(void* p) {
  if (p == nullptr) return;
  Header* h = HeaderOf(p);
  if (h->cls == kLarge) {
    std::free(h);
    return;
  }
  auto* b = static_cast<FreeBlock*>(p);
  b->next = free_[h->cls];
  free_[h->cls] = b;
}

void* NgMemPool::Realloc(void* p, size_t size) {
  if (p == nullptr) return Alloc(size);
  if (size == 0) {
    Free(p);
    return nullptr;
  }
  Header* h = HeaderOf(p);
  if (size <= h->size) return p;
  void* n = Alloc(size);
  if (n == nullptr) return nullptr;
  std::memcpy(n, p, h->size);
  Free(p);
  return n;
}

}  // namespace qbridge::quic
