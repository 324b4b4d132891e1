#include "quic/mem_pool.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace qbridge::quic {
namespace {

// Size classes, so a long-lived block wastes little (an idle connection keeps about 20 of
// them): multiples of 16 up to 128, then four steps per power of two (as jemalloc does),
// and each power of two plus 64 bytes from 512 up, which fits ngtcp2's pool blocks (a
// power of two of objects plus a 16-byte header) and its 8 KiB out-of-order chunks (8192
// bytes plus a small header) without going to the next step. Requests above 8256 bytes go
// to the heap as they are.
constexpr size_t kMaxCachedBytes = 1 << 20;
constexpr size_t kLarge = SIZE_MAX;
constexpr size_t kMaxClassBytes = 8192 + 64;

constexpr auto kCapacities = [] {
  std::array<size_t, 64> caps{};
  size_t n = 0;
  for (size_t c = 16; c <= 128; c += 16) caps[n++] = c;
  for (size_t k = 128; k < 8192; k *= 2) {
    for (size_t j = 1; j <= 4; ++j) {
      if (k > 256 && j == 1) caps[n++] = k + 64;  // between k and k + k/4
      caps[n++] = k + j * (k / 4);
    }
  }
  caps[n++] = kMaxClassBytes;
  return std::pair{caps, n};
}();
constexpr size_t kClasses = kCapacities.second;
constexpr size_t Capacity(size_t cls) { return kCapacities.first[cls]; }
static_assert(Capacity(kClasses - 1) == kMaxClassBytes);

// The class of a request of n bytes, by n / 16 rounded up: one table load.
constexpr auto kClassOf16 = [] {
  std::array<uint8_t, kMaxClassBytes / 16 + 1> t{};
  size_t cls = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    while (Capacity(cls) < i * 16) ++cls;
    t[i] = uint8_t(cls);
  }
  return t;
}();

// Every block starts with its class, so the user pointer keeps malloc's 16-byte alignment.
struct alignas(16) Header {
  size_t cls;
  size_t size;  // usable bytes (for realloc)
};

struct FreeBlock {
  FreeBlock* next;
};

// Plain data, so it stays usable while the thread exits (after Drain ran).
struct Cache {
  FreeBlock* free[kClasses];
  size_t count[kClasses];
  bool dead;
  NgMemStats stats;
};
thread_local Cache cache;

void Drain() {
  for (size_t c = 0; c < kClasses; ++c) {
    while (FreeBlock* f = cache.free[c]) {
      cache.free[c] = f->next;
      std::free(reinterpret_cast<Header*>(f) - 1);
    }
    cache.count[c] = 0;
  }
  cache.stats.cached_bytes = 0;
}

// Frees the cache when the thread ends; blocks freed after that go straight to the heap.
struct CacheOwner {
  ~CacheOwner() {
    Drain();
    cache.dead = true;
  }
};
thread_local CacheOwner owner;

size_t ClassOf(size_t size) {
  return size <= kMaxClassBytes ? kClassOf16[(size + 15) / 16] : kLarge;
}

void* Alloc(size_t size) {
  const size_t cls = ClassOf(size);
  if (cls != kLarge && !cache.dead) {
    (void)&owner;  // constructs the owner on first use in this thread
    if (FreeBlock* f = cache.free[cls]) {
      cache.free[cls] = f->next;
      --cache.count[cls];
      cache.stats.cached_bytes -= Capacity(cls);
      ++cache.stats.reused;
      return f;
    }
  }
  const size_t usable = cls == kLarge ? size : Capacity(cls);
  auto* h = static_cast<Header*>(std::malloc(sizeof(Header) + usable));
  if (h == nullptr) return nullptr;
  ++cache.stats.heap;
  h->cls = cls;
  h->size = usable;
  return h + 1;
}

void* AllocZeroed(size_t n, size_t size) {
  if (size != 0 && n > SIZE_MAX / size) return nullptr;
  const size_t bytes = n * size;
  if (ClassOf(bytes) == kLarge) {  // calloc: fresh pages from the kernel are not touched
    auto* h = static_cast<Header*>(std::calloc(1, sizeof(Header) + bytes));
    if (h == nullptr) return nullptr;
    ++cache.stats.heap;
    h->cls = kLarge;
    h->size = bytes;
    return h + 1;
  }
  void* p = Alloc(bytes);
  if (p != nullptr) std::memset(p, 0, bytes);
  return p;
}

void Free(void* p) {
  if (p == nullptr) return;
  Header* h = static_cast<Header*>(p) - 1;
  const size_t cls = h->cls;
  if (cls == kLarge || cache.dead || (cache.count[cls] + 1) * Capacity(cls) > kMaxCachedBytes) {
    std::free(h);
    return;
  }
  (void)&owner;  // a thread that only frees must drain its cache at exit too
  auto* f = static_cast<FreeBlock*>(p);
  f->next = cache.free[cls];
  cache.free[cls] = f;
  ++cache.count[cls];
  cache.stats.cached_bytes += Capacity(cls);
}

void* Realloc(void* p, size_t size) {
  if (p == nullptr) return Alloc(size);
  if (size == 0) {
    Free(p);
    return nullptr;
  }
  const Header* h = static_cast<Header*>(p) - 1;
  if (size <= h->size) return p;
  void* n = Alloc(size);
  if (n == nullptr) return nullptr;
  std::memcpy(n, p, h->size);
  Free(p);
  return n;
}

const ngtcp2_mem kMem = {
    nullptr,
    [](size_t size, void*) { return Alloc(size); },
    [](void* p, void*) { Free(p); },
    [](size_t n, size_t size, void*) { return AllocZeroed(n, size); },
    [](void* p, size_t size, void*) { return Realloc(p, size); },
};

}  // namespace

const ngtcp2_mem* NgMem() { return &kMem; }

NgMemStats ThreadNgMemStats() { return cache.stats; }

}  // namespace qbridge::quic
