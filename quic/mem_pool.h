// The memory a connection's ngtcp2 state takes, recycled within the connection: freed
// blocks go on a free list per size class and serve the next request of that class, so
// loss recovery (ack ranges, out-of-order stream data, retransmission records) stops
// calling malloc once a connection has seen its peak. One connection is driven by one
// thread at a time, so there are no locks; memory goes back to the heap with the connection.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>

namespace qbridge::quic {

class NgMemPool {
 public:
  NgMemPool();
  ~NgMemPool();
  NgMemPool(const NgMemPool&) = delete;
  NgMemPool& operator=(const NgMemPool&) = delete;

  const ngtcp2_mem* mem() const { return &mem_; }

  void* Alloc(size_t size);
  void Free(void* p);
  void* Realloc(void* p, size_t size);

  // Requests served from a free list, and those that went to the heap.
  uint64_t reused() const { return reused_; }
  uint64_t heap() const { return heap_; }

 private:
  // Classes of 64 bytes to 16 KiB, powers of two; larger requests go to the heap each time.
  static constexpr size_t kMinShift = 6, kClasses = 9;
  struct FreeBlock {
    FreeBlock* next;
  };
  static size_t ClassOf(size_t size);

  FreeBlock* free_[kClasses] = {};
  ngtcp2_mem mem_;
  uint64_t reused_ = 0, heap_ = 0;
};

}  // namespace qbridge::quic
