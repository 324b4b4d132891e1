// Deadlines by slot in an indexed binary min-heap: the earliest in O(1), a slot's deadline
// set, moved or removed in O(log n). A server endpoint keeps one entry per connection, so
// asking "when is the next timer" no longer scans every connection (10,000 device sessions
// made that scan the worker's largest cost).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qbridge::quic {

class DeadlineHeap {
 public:
  static constexpr uint64_t kNever = UINT64_MAX;

  // Sets (or moves) a slot's deadline; kNever removes it.
  void Set(uint32_t slot, uint64_t at) {
    if (at == kNever) {
      Remove(slot);
      return;
    }
    if (slot >= pos_.size()) pos_.resize(size_t(slot) + 1, kAbsent);
    uint32_t i = pos_[slot];
    if (i == kAbsent) {
      i = uint32_t(heap_.size());
      heap_.push_back(Node{at, slot});
      pos_[slot] = i;
      SiftUp(i);
      return;
    }
    const uint64_t old = heap_[i].at;
    if (at == old) return;  // the common case: a packet that did not move the timer
    heap_[i].at = at;
    if (at < old) SiftUp(i);
    else SiftDown(i);
  }
  void Remove(uint32_t slot) {
    if (slot >= pos_.size() || pos_[slot] == kAbsent) return;
    const uint32_t i = pos_[slot];
    pos_[slot] = kAbsent;
    const Node last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) return;
    heap_[i] = last;
    pos_[last.slot] = i;
    SiftUp(i);
    SiftDown(pos_[last.slot]);
  }
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  uint64_t Top() const { return heap_.empty() ? kNever : heap_[0].at; }
  uint32_t TopSlot() const { return heap_[0].slot; }  // not empty()
  uint64_t Get(uint32_t slot) const {
    return slot < pos_.size() && pos_[slot] != kAbsent ? heap_[pos_[slot]].at : kNever;
  }

 private:
  static constexpr uint32_t kAbsent = UINT32_MAX;
  struct Node {
    uint64_t at;
    uint32_t slot;
  };
  void Place(uint32_t i, Node n) {
    heap_[i] = n;
    pos_[n.slot] = i;
  }
  void SiftUp(uint32_t i) {
    const Node n = heap_[i];
    while (i > 0) {
      const uint32_t parent = (i - 1) / 2;
      if (heap_[parent].at <= n.at) break;
      Place(i, heap_[parent]);
      i = parent;
    }
    Place(i, n);
  }
  void SiftDown(uint32_t i) {
    const Node n = heap_[i];
    const uint32_t size = uint32_t(heap_.size());
    for (;;) {
      uint32_t child = 2 * i + 1;
      if (child >= size) break;
      if (child + 1 < size && heap_[child + 1].at < heap_[child].at) ++child;
      if (heap_[child].at >= n.at) break;
      Place(i, heap_[child]);
      i = child;
    }
    Place(i, n);
  }

  std::vector<Node> heap_;
  std::vector<uint32_t> pos_;  // slot -> index in heap_, kAbsent when not in it
};

}  // namespace qbridge::quic
