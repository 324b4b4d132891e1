#include "tools/qbench/sequence.h"

namespace qbridge::bench {

SequenceChecker::Verdict SequenceChecker::Observe(uint64_t seq) {
  ++received_;
  if (seq >= next_) {
    const uint64_t skipped = seq - next_;
    holes_ += skipped;
    // The window slides: slots now standing for next_..seq held older numbers.
    if (skipped + 1 >= kWindow) {
      std::fill(bits_.begin(), bits_.end(), 0);
    } else {
      for (uint64_t s = next_; s <= seq; ++s) Clear(s);
    }
    Mark(seq);
    next_ = seq + 1;
    return skipped ? Verdict::kGap : Verdict::kInOrder;
  }
  if (next_ - seq > kWindow) {
    ++too_old_;
    return Verdict::kTooOld;
  }
  if (Seen(seq)) {
    ++duplicates_;
    return Verdict::kDuplicate;
  }
  Mark(seq);
  ++reordered_;
  --holes_;
  return Verdict::kLate;
}

SequenceBook::Totals SequenceBook::Sum() const {
  Totals t;
  for (const auto& [key, c] : book_) {
    ++t.streams;
    t.received += c.received();
    t.unique += c.unique();
    t.duplicates += c.duplicates();
    t.reordered += c.reordered();
    t.missing += c.missing();
    t.too_old += c.too_old();
  }
  return t;
}

}  // namespace qbridge::bench
