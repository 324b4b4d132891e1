// A hierarchical timing wheel (Varghese & Lauck) for millions of keepalive deadlines:
// Schedule, Cancel and Reschedule are O(1), Advance costs O(1) per tick crossed with an
// empty first level skipped, plus O(1) per timer fired or moved down a level.
//
// Four levels of 256 slots: with the default 1 ms tick the first level spans 256 ms and
// the whole wheel 2^32 ticks (49 days); later deadlines wait in the top level and are
// re-filed as the wheel turns. A timer never fires before its deadline and at most one
// tick after the Advance call that passes it.
//
// Timers live in one pool indexed by TimerId (no allocation once the pool has grown to the
// live count; reserve() it). Single-threaded: the controlplane core owns it.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "dataplane/api/time.h"

namespace qbridge::cp {

using dp::MonoNs;

struct TimerId {
  uint32_t index = UINT32_MAX;
  uint32_t gen = 0;
  bool valid() const { return index != UINT32_MAX; }
  bool operator==(const TimerId&) const = default;
};

class TimerWheel {
 public:
  static constexpr int kLevels = 4;
  static constexpr int kSlotBits = 8;
  static constexpr uint32_t kSlots = 1u << kSlotBits;

  explicit TimerWheel(uint64_t tick_ns = dp::kMsNs, MonoNs start = 0);

  void reserve(size_t n) { nodes_.reserve(n); }
  size_t size() const { return live_; }
  uint64_t tick_ns() const { return tick_ns_; }

  // Fires at the first Advance(now) with now >= deadline (rounded up to a tick).
  TimerId Schedule(MonoNs deadline, uint64_t cookie);
  // False when the timer already fired or was cancelled (a stale id is harmless).
  bool Cancel(TimerId id);
  // Moves a live timer to a new deadline, keeping its id; false for a stale id.
  bool Reschedule(TimerId id, MonoNs deadline);

  // Fires every timer due at `now`: fn(TimerId, uint64_t cookie). The callback may
  // schedule and cancel timers (including ones due now: they fire in this call).
  // Returns the number fired.
  template <typename Fn>
  size_t Advance(MonoNs now, Fn&& fn);

  // A time at or before the earliest deadline (exact within the first level; otherwise
  // the next time the wheel must turn). dp::kNeverNs when empty.
  MonoNs NextExpiry() const;

 private:
  static constexpr uint32_t kNil = UINT32_MAX;
  static constexpr uint16_t kFree = UINT16_MAX;
  static constexpr uint16_t kDueList = kLevels * kSlots;  // already due at scheduling time

  struct Node {
    uint64_t expiry;  // in ticks
    uint64_t cookie;
    uint32_t prev, next;
    uint32_t gen;
    uint16_t list;    // slot index (level * kSlots + slot), kDueList or kFree
  };

  uint64_t TickOf(MonoNs t) const { return (t + tick_ns_ - 1) / tick_ns_; }  // rounds up
  void Insert(uint32_t i);
  void Link(uint32_t i, uint16_t list);
  void Unlink(uint32_t i);
  uint32_t PopFront(uint16_t list);
  void Cascade(int level);
  template <typename Fn>
  size_t FireList(uint16_t list, Fn& fn);
  void Free(uint32_t i);
  // The next occupied first-level slot after the current tick within this turn, or kSlots.
  uint32_t NextLevel0Slot() const;

  uint64_t tick_ns_;
  uint64_t now_tick_;  // every timer with expiry <= now_tick_ has fired
  size_t live_ = 0;
  size_t level0_live_ = 0;
  std::vector<Node> nodes_;
  uint32_t free_head_ = kNil;
  std::array<uint32_t, kLevels * kSlots + 1> heads_;
  std::array<uint64_t, kSlots / 64> level0_bits_{};
};

template <typename Fn>
size_t TimerWheel::FireList(uint16_t list, Fn& fn) {
  size_t fired = 0;
  for (uint32_t i = PopFront(list); i != kNil; i = PopFront(list)) {
    const TimerId id{i, nodes_[i].gen};
    const uint64_t cookie = nodes_[i].cookie;
    Free(i);
    fn(id, cookie);
    ++fired;
  }
  return fired;
}

template <typename Fn>
size_t TimerWheel::Advance(MonoNs now, Fn&& fn) {
  const uint64_t target = now / tick_ns_;
  size_t fired = FireList(kDueList, fn);
  while (now_tick_ < target) {
    if (level0_live_ == 0 || NextLevel0Slot() == kSlots) {
      // Nothing in the first level before the next turn: jump to the turn's last tick.
      const uint64_t last = now_tick_ | (kSlots - 1);
      if (last >= target) {
        now_tick_ = target;
        break;
      }
      now_tick_ = last;
    } else {
      const uint64_t next = (now_tick_ & ~uint64_t(kSlots - 1)) + NextLevel0Slot();
      if (next > target) {
        now_tick_ = target;
        break;
      }
      now_tick_ = next - 1;
    }
    ++now_tick_;
    // Turn the upper levels whose lower digits all wrapped, the highest first.
    int top = 0;
    while (top + 1 < kLevels && (now_tick_ & ((uint64_t(1) << (kSlotBits * (top + 1))) - 1)) == 0)
      ++top;
    for (int level = top; level >= 1; --level) Cascade(level);
    fired += FireList(uint16_t(now_tick_ & (kSlots - 1)), fn);
    fired += FireList(kDueList, fn);
  }
  fired += FireList(kDueList, fn);
  return fired;
}

}  // namespace qbridge::cp
