// A bounded single-producer single-consumer ring of fixed-size, trivially copyable
// messages: one per ordered pair of cores. Producer and consumer indices live on their own
// cache lines and each side caches the other's index, so a burst costs two shared-line
// touches. Never blocks: a full ring refuses what does not fit and the caller decides
// (drop and count, or hold back). No DPDK needed, so the socket backend and the
// controlplane use the same ring; same semantics as rte_ring with RING_F_SP_ENQ|RING_F_SC_DEQ.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>

namespace qbridge::dp {

template <typename T>
class SpscRing {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  // Capacity is rounded up to a power of two.
  explicit SpscRing(size_t capacity) {
    size_t n = 2;
    while (n < capacity) n <<= 1;
    mask_ = n - 1;
    slots_ = std::make_unique<T[]>(n);
  }
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  size_t capacity() const { return mask_ + 1; }

  // Producer side: enqueues up to msgs.size(); returns how many went in.
  size_t EnqueueBurst(std::span<const T> msgs) {
    const uint64_t head = prod_.head.load(std::memory_order_relaxed);
    uint64_t room = capacity() - (head - prod_.cached_tail);
    if (room < msgs.size()) {
      prod_.cached_tail = cons_.tail.load(std::memory_order_acquire);
      room = capacity() - (head - prod_.cached_tail);
    }
    const size_t n = msgs.size() < room ? msgs.size() : size_t(room);
    for (size_t i = 0; i < n; ++i) slots_[(head + i) & mask_] = msgs[i];
    prod_.head.store(head + n, std::memory_order_release);
    const uint64_t used = head + n - prod_.cached_tail;
    if (used > prod_.high_water) prod_.high_water = used;
    if (n < msgs.size()) prod_.refused += msgs.size() - n;
    return n;
  }
  bool Enqueue(const T& m) { return EnqueueBurst(std::span<const T>(&m, 1)) == 1; }

  // Consumer side: dequeues up to out.size(); returns how many came out.
  size_t DequeueBurst(std::span<T> out) {
    const uint64_t tail = cons_.tail.load(std::memory_order_relaxed);
    uint64_t avail = cons_.cached_head - tail;
    if (avail < out.size()) {
      cons_.cached_head = prod_.head.load(std::memory_order_acquire);
      avail = cons_.cached_head - tail;
    }
    const size_t n = out.size() < avail ? out.size() : size_t(avail);
    for (size_t i = 0; i < n; ++i) out[i] = slots_[(tail + i) & mask_];
    cons_.tail.store(tail + n, std::memory_order_release);
    return n;
  }

  // Producer-side figures (read them from the producer, or as an estimate elsewhere).
  uint64_t high_water() const { return prod_.high_water; }
  uint64_t refused() const { return prod_.refused; }
  size_t ApproxSize() const {
    return size_t(prod_.head.load(std::memory_order_acquire) -
                  cons_.tail.load(std::memory_order_acquire));
  }

 private:
  struct alignas(64) Producer {
    std::atomic<uint64_t> head{0};
    uint64_t cached_tail = 0;
    uint64_t high_water = 0;
    uint64_t refused = 0;
  };
  struct alignas(64) Consumer {
    std::atomic<uint64_t> tail{0};
    uint64_t cached_head = 0;
  };
  Producer prod_;
  Consumer cons_;
  size_t mask_;
  std::unique_ptr<T[]> slots_;
};

}  // namespace qbridge::dp
