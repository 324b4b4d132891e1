#include "controlplane/timer_wheel.h"

#include <bit>

namespace qbridge::cp {

TimerWheel::TimerWheel(uint64_t tick_ns, MonoNs start)
    : tick_ns_(tick_ns == 0 ? 1 : tick_ns), now_tick_(start / tick_ns_) {
  heads_.fill(kNil);
}

TimerId TimerWheel::Schedule(MonoNs deadline, uint64_t cookie) {
  uint32_t i;
  if (free_head_ != kNil) {
    i = free_head_;
    free_head_ = nodes_[i].next;
  } else {
    i = uint32_t(nodes_.size());
    nodes_.push_back(Node{0, 0, kNil, kNil, 0, kFree});
  }
  Node& n = nodes_[i];
  n.expiry = TickOf(deadline);
  n.cookie = cookie;
  ++live_;
  Insert(i);
  return TimerId{i, n.gen};
}

bool TimerWheel::Cancel(TimerId id) {
  if (id.index >= nodes_.size()) return false;
  Node& n = nodes_[id.index];
  if (n.gen != id.gen || n.list == kFree) return false;
  Unlink(id.index);
  Free(id.index);
  return true;
}

bool TimerWheel::Reschedule(TimerId id, MonoNs deadline) {
  if (id.index >= nodes_.size()) return false;
  Node& n = nodes_[id.index];
  if (n.gen != id.gen || n.list == kFree) return false;
  Unlink(id.index);
  n.expiry = TickOf(deadline);
  Insert(id.index);
  return true;
}

void TimerWheel::Insert(uint32_t i) {
  const uint64_t e = nodes_[i].expiry;
  if (e <= now_tick_) return Link(i, kDueList);
  const uint64_t delta = e - now_tick_;
  // The lowest level whose span covers the delay. Its slot for `e` is turned (cascaded)
  // at the start of e's block at that level, which is after now (delta is at least the
  // level below's span) and at or before e.
  for (int level = 0; level < kLevels; ++level) {
    const int shift = kSlotBits * level;
    if (delta < (uint64_t(1) << (shift + kSlotBits))) {
      return Link(i, uint16_t(level * kSlots + ((e >> shift) & (kSlots - 1))));
    }
  }
  // Beyond the wheel: the top level's last slot of this turn; re-filed when it turns.
  const int shift = kSlotBits * (kLevels - 1);
  Link(i, uint16_t((kLevels - 1) * kSlots + (((now_tick_ >> shift) + kSlots - 1) & (kSlots - 1))));
}

void TimerWheel::Link(uint32_t i, uint16_t list) {
  Node& n = nodes_[i];
  n.list = list;
  n.prev = kNil;
  n.next = heads_[list];
  if (n.next != kNil) nodes_[n.next].prev = i;
  heads_[list] = i;
  if (list < kSlots) {
    ++level0_live_;
    level0_bits_[list / 64] |= uint64_t(1) << (list % 64);
  }
}

void TimerWheel::Unlink(uint32_t i) {
  Node& n = nodes_[i];
  if (n.prev != kNil) {
    nodes_[n.prev].next = n.next;
  } else {
    heads_[n.list] = n.next;
  }
  if (n.next != kNil) nodes_[n.next].prev = n.prev;
  if (n.list < kSlots) {
    --level0_live_;
    if (heads_[n.list] == kNil) level0_bits_[n.list / 64] &= ~(uint64_t(1) << (n.list % 64));
  }
  n.prev = n.next = kNil;
}

uint32_t TimerWheel::PopFront(uint16_t list) {
  const uint32_t i = heads_[list];
  if (i != kNil) Unlink(i);
  return i;
}

void TimerWheel::Free(uint32_t i) {
  Node& n = nodes_[i];
  n.list = kFree;
  ++n.gen;
  n.next = free_head_;
  free_head_ = i;
  --live_;
}

void TimerWheel::Cascade(int level) {
  const int shift = kSlotBits * level;
  const uint16_t list = uint16_t(level * kSlots + ((now_tick_ >> shift) & (kSlots - 1)));
  for (uint32_t i = PopFront(list); i != kNil; i = PopFront(list)) Insert(i);
}

uint32_t TimerWheel::NextLevel0Slot() const {
  // Slots after the current one in this turn (the current one has fired).
  const uint32_t from = uint32_t(now_tick_ & (kSlots - 1)) + 1;
  for (uint32_t w = from / 64; w < kSlots / 64; ++w) {
    uint64_t bits = level0_bits_[w];
    if (w == from / 64) bits &= from % 64 == 0 ? ~uint64_t(0) : ~((uint64_t(1) << (from % 64)) - 1);
    if (bits) return w * 64 + uint32_t(std::countr_zero(bits));
  }
  return kSlots;
}

MonoNs TimerWheel::NextExpiry() const {
  if (live_ == 0) return dp::kNeverNs;
  if (heads_[kDueList] != kNil) return now_tick_ * tick_ns_;
  const uint64_t turn = now_tick_ & ~uint64_t(kSlots - 1);
  const uint32_t slot = level0_live_ ? NextLevel0Slot() : kSlots;
  return (turn + slot) * tick_ns_;  // slot == kSlots: the next turn, when upper levels cascade
}

}  // namespace qbridge::cp
