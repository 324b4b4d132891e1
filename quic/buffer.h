// Bytes shared by a stream's writer and its retransmission queue: reference-counted and
// immutable once handed to a connection (ngtcp2 retransmits from them until the peer
// acknowledges them). A Buffer comes from the heap (Copy, Allocate) or, on a hot path, from
// a BufferPool that recycles blocks by size class so that steady traffic never calls the
// allocator.
//
// Threads: the count is atomic, so a heap Buffer may be shared between threads. A pooled
// Buffer returns to its pool when the last reference drops, which must happen on the
// pool's thread (a worker core's buffers never leave it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace qbridge::quic {

class BufferPool;
struct PoolState;

class Buffer {
 public:
  Buffer() = default;
  Buffer(std::nullptr_t) {}  // NOLINT: an empty Buffer reads as "no data" (SendFin)
  Buffer(const Buffer& o) : b_(o.b_) { Ref(); }
  Buffer(Buffer&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
  Buffer& operator=(const Buffer& o) {
    if (this != &o) {
      o.Ref();
      Unref();
      b_ = o.b_;
    }
    return *this;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      Unref();
      b_ = o.b_;
      o.b_ = nullptr;
    }
    return *this;
  }
  ~Buffer() { Unref(); }

  // Heap buffers: `size` bytes, uninitialised; or a copy of `bytes`.
  static Buffer Allocate(size_t size);
  static Buffer Copy(std::span<const uint8_t> bytes);
  static Buffer Copy(const std::vector<uint8_t>& bytes) { return Copy(std::span(bytes)); }

  explicit operator bool() const { return b_ != nullptr; }
  const uint8_t* data() const { return b_ ? b_->bytes : nullptr; }
  size_t size() const { return b_ ? b_->size : 0; }
  bool empty() const { return size() == 0; }
  std::span<const uint8_t> span() const { return {data(), size()}; }
  const uint8_t* begin() const { return data(); }
  const uint8_t* end() const { return data() + size(); }
  uint8_t operator[](size_t i) const { return b_->bytes[i]; }

  // Writable only while nobody else holds it (before it is handed to a connection).
  bool unique() const {
    return b_ != nullptr && std::atomic_ref<uint32_t>(b_->refs).load(std::memory_order_acquire) == 1;
  }
  std::span<uint8_t> mutable_span() { return {b_ ? b_->bytes : nullptr, size()}; }
  // Shortens the buffer (an encoder that wrote less than it reserved).
  void Truncate(size_t n) {
    if (b_ && n < b_->size) b_->size = n;
  }
  // Room beyond size() in the block: a pool block has its class's capacity, a heap block
  // none. Extend(n) takes n bytes of it (only while unique(); bytes already handed out keep
  // their addresses) and returns them to be written.
  size_t spare() const {
    return b_ == nullptr || b_->cls == kHeap ? 0 : (kPoolMinBytes << b_->cls) - b_->size;
  }
  std::span<uint8_t> Extend(size_t n) {
    const size_t at = b_->size;
    b_->size += n;
    return {b_->bytes + at, n};
  }

 private:
  friend class BufferPool;
  struct Block {
    uint32_t refs;            // atomic_ref: the block is plain memory from malloc
    uint32_t cls;             // the pool's size class; kHeap for heap blocks
    size_t size;
    PoolState* pool;          // null for heap blocks
    alignas(16) uint8_t bytes[];
  };
  static constexpr uint32_t kHeap = UINT32_MAX;
  static constexpr size_t kPoolMinBytes = 64;  // the pool's smallest class; class c holds 64 << c
  explicit Buffer(Block* b) : b_(b) {}
  // A block is its header followed by its bytes (the flexible array member).
  static Block* NewBlock(size_t capacity);
  static Block* Init(Block* b, uint32_t cls, size_t size, PoolState* pool);
  void Ref() const {
    if (b_) std::atomic_ref<uint32_t>(b_->refs).fetch_add(1, std::memory_order_relaxed);
  }
  void Unref() {
    if (b_ && std::atomic_ref<uint32_t>(b_->refs).fetch_sub(1, std::memory_order_acq_rel) == 1) {
      Release(b_);
    }
    b_ = nullptr;
  }
  static void Release(Block* b);

  Block* b_ = nullptr;
};

// Recycles buffers of up to 64 KiB in power-of-two classes (64 bytes up, 11 classes);
// larger requests go to the heap. Each class keeps at most `max_cached_bytes_per_class /
// class size` free blocks (at least 16), so a burst's memory goes back to the heap once the
// burst has passed: with the default, at most about 11 MiB stay cached per pool. Blocks
// still referenced when the pool goes stay valid; the last of them frees its memory.
class BufferPool {
 public:
  explicit BufferPool(size_t max_cached_bytes_per_class = 1 << 20);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // `size` bytes, uninitialised.
  Buffer Get(size_t size);
  Buffer Copy(std::span<const uint8_t> bytes);

  struct Stats {
    uint64_t reused = 0;     // served from a free list
    uint64_t allocated = 0;  // went to the heap (pool growth, or larger than the classes)
    uint64_t outstanding = 0;  // blocks handed out and not yet back
  };
  Stats stats() const;

 private:
  PoolState* state_;
};

}  // namespace qbridge::quic
