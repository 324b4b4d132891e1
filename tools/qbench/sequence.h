// Per-publisher sequence checking on the subscriber side: every qbench payload carries its
// publisher's id and a sequence number counting from 0, so a subscriber can say, per
// publisher, how many messages never came (holes), came twice, or came after a later one.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace qbridge::bench {

// One publisher's stream as one subscriber sees it. Sequence numbers start at 0: what a
// subscriber never saw from the start counts as missing. A late arrival within the last
// kWindow sequence numbers is told apart from a duplicate exactly; an older one cannot be
// and is counted as `too_old` (neither filled in nor duplicate).
class SequenceChecker {
 public:
  static constexpr uint64_t kWindow = 1 << 14;

  enum class Verdict : uint8_t { kInOrder, kGap, kLate, kDuplicate, kTooOld };
  Verdict Observe(uint64_t seq);

  uint64_t received() const { return received_; }
  uint64_t unique() const { return received_ - duplicates_; }
  uint64_t duplicates() const { return duplicates_; }
  uint64_t reordered() const { return reordered_; }  // late arrivals that filled a hole
  // Sequence numbers below next() not seen. An arrival too old to place is taken to fill a
  // hole: with members of a $share group far out of step, that is what it nearly always is.
  uint64_t missing() const { return holes_ > too_old_ ? holes_ - too_old_ : 0; }
  uint64_t too_old() const { return too_old_; }
  uint64_t next() const { return next_; }            // highest seen + 1

 private:
  bool Seen(uint64_t seq) const { return bits_[(seq % kWindow) / 64] >> (seq % 64) & 1; }
  void Mark(uint64_t seq) { bits_[(seq % kWindow) / 64] |= uint64_t(1) << (seq % 64); }
  void Clear(uint64_t seq) { bits_[(seq % kWindow) / 64] &= ~(uint64_t(1) << (seq % 64)); }

  std::vector<uint64_t> bits_ = std::vector<uint64_t>(kWindow / 64);
  uint64_t next_ = 0, received_ = 0, duplicates_ = 0, reordered_ = 0, holes_ = 0, too_old_ = 0;
};

// All publishers one process's subscribers hear, keyed by (publisher id, subscriber index).
class SequenceBook {
 public:
  SequenceChecker::Verdict Observe(uint64_t publisher, uint32_t subscriber, uint64_t seq) {
    return book_[{publisher, subscriber}].Observe(seq);
  }
  struct Totals {
    uint64_t streams = 0, received = 0, unique = 0, duplicates = 0, reordered = 0, missing = 0,
             too_old = 0;
  };
  Totals Sum() const;

 private:
  absl::flat_hash_map<std::pair<uint64_t, uint32_t>, SequenceChecker> book_;
};

}  // namespace qbridge::bench
