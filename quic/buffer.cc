#include "quic/buffer.h"

#include <cstdlib>
#include <cstring>

namespace qbridge::quic {

namespace {
constexpr size_t kMinShift = 6;  // 64 bytes: Buffer::kPoolMinBytes
static_assert(size_t{1} << kMinShift == 64);
constexpr size_t kClasses = 11;  // up to 64 KiB
}  // namespace

struct PoolState {
  struct Free {
    Free* next;
  };
  Free* free[kClasses] = {};
  size_t cached[kClasses] = {};
  size_t max_cached[kClasses] = {};
  bool alive = true;
  BufferPool::Stats stats;
};

Buffer::Block* Buffer::NewBlock(size_t capacity) {
  void* mem = std::malloc(sizeof(Buffer::Block) + capacity);
  if (mem == nullptr) std::abort();  // as operator new does without exceptions
  return static_cast<Buffer::Block*>(mem);
}

Buffer::Block* Buffer::Init(Block* b, uint32_t cls, size_t size, PoolState* pool) {
  b->refs = 1;
  b->cls = cls;
  b->size = size;
  b->pool = pool;
  return b;
}

namespace {

size_t ClassOf(size_t size) {
  size_t cls = 0;
  while (cls < kClasses && (size_t{1} << (kMinShift + cls)) < size) ++cls;
  return cls;  // kClasses: too large to pool
}

}  // namespace

Buffer Buffer::Allocate(size_t size) {
  return Buffer(Init(NewBlock(size), kHeap, size, nullptr));
}

Buffer Buffer::Copy(std::span<const uint8_t> bytes) {
  Buffer b = Allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(b.b_->bytes, bytes.data(), bytes.size());
  return b;
}

void Buffer::Release(Block* b) {
  PoolState* pool = b->pool;
  if (pool == nullptr) {
    std::free(b);
    return;
  }
  --pool->stats.outstanding;
  const uint32_t cls = b->cls;
  if (pool->alive && pool->cached[cls] < pool->max_cached[cls]) {
    auto* f = reinterpret_cast<PoolState::Free*>(b);
    f->next = pool->free[cls];
    pool->free[cls] = f;
    ++pool->cached[cls];
    return;
  }
  std::free(b);
  if (!pool->alive && pool->stats.outstanding == 0) delete pool;
}

BufferPool::BufferPool(size_t max_cached_bytes_per_class) : state_(new PoolState) {
  for (size_t c = 0; c < kClasses; ++c) {
    const size_t per = max_cached_bytes_per_class >> (kMinShift + c);
    state_->max_cached[c] = per < 16 ? 16 : per;
  }
}

BufferPool::~BufferPool() {
  for (size_t c = 0; c < kClasses; ++c) {
    while (PoolState::Free* f = state_->free[c]) {
      state_->free[c] = f->next;
      std::free(f);
    }
  }
  state_->alive = false;
  if (state_->stats.outstanding == 0) delete state_;
}

Buffer BufferPool::Get(size_t size) {
  const size_t cls = ClassOf(size);
  if (cls == kClasses) {
    ++state_->stats.allocated;
    return Buffer::Allocate(size);
  }
  Buffer::Block* b;
  if (PoolState::Free* f = state_->free[cls]) {
    state_->free[cls] = f->next;
    --state_->cached[cls];
    ++state_->stats.reused;
    b = reinterpret_cast<Buffer::Block*>(f);
  } else {
    ++state_->stats.allocated;
    b = Buffer::NewBlock(size_t{1} << (kMinShift + cls));
  }
  ++state_->stats.outstanding;
  return Buffer(Buffer::Init(b, uint32_t(cls), size, state_));
}

Buffer BufferPool::Copy(std::span<const uint8_t> bytes) {
  Buffer b = Get(bytes.size());
  if (!bytes.empty()) std::memcpy(b.mutable_span().data(), bytes.data(), bytes.size());
  return b;
}

BufferPool::Stats BufferPool::stats() const { return state_->stats; }

}  // namespace qbridge::quic
