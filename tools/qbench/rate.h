// Open-loop pacing: message k of a schedule is due at start + k / rate, whatever happened
// to the ones before it (a closed loop would slow down with the system under test and hide
// its latency). A sender that falls behind catches up in bursts of at most max_burst, and
// more than max_lag behind it gives up the missed sends: they are counted as skipped, apart
// for the two reasons a sender falls behind, so the summary can say who was the limit.
#pragma once

#include <algorithm>
#include <cstdint>

namespace qbridge::bench {

class RateController {
 public:
  // `per_second` <= 0: nothing is ever due. `start` is the first send's time (a phase
  // offset spreads many connections' schedules apart).
  RateController(double per_second = 0, uint64_t start = 0, uint64_t max_lag_ns = 1'000'000'000,
                 uint64_t max_burst = 1000)
      : per_second_(per_second), start_(start), max_lag_(max_lag_ns), max_burst_(max_burst) {}

  bool active() const { return per_second_ > 0; }
  // When the next send is due (UINT64_MAX when inactive).
  uint64_t next() const { return active() ? At(k_) : UINT64_MAX; }
  // Sends due at `now`, at most max_burst.
  uint64_t Due(uint64_t now) const {
    if (!active() || now < next()) return 0;
    // Rounding in At() and here may disagree by one at a boundary: now >= next() is due.
    const uint64_t due = std::max(k_ + 1, uint64_t(double(now - start_) * per_second_ / 1e9) + 1);
    return std::min(due - k_, max_burst_);
  }
  // `n` sends were made at `now`; records how late the first one was.
  void Sent(uint64_t n, uint64_t now) {
    if (n == 0) return;
    max_late_ = std::max(max_late_, now > next() ? now - next() : 0);
    k_ += n;
    sent_ += n;
  }
  // Called when a sender could not send what was due. A schedule more than max_lag behind
  // moves up to now; the sends it drops are counted as skipped, `backpressure` (the system
  // under test would not take more: a full window or buffer) or not (the sender itself did
  // not get round to them in time).
  void Behind(uint64_t now, bool backpressure) {
    if (!active() || now < next() || now - next() <= max_lag_) return;
    const uint64_t due = uint64_t(double(now - start_) * per_second_ / 1e9);
    const uint64_t dropped = due > k_ ? due - k_ : 0;
    (backpressure ? skipped_backpressure_ : skipped_self_) += dropped;
    k_ += dropped;
  }

  uint64_t sent() const { return sent_; }
  uint64_t skipped_backpressure() const { return skipped_backpressure_; }
  uint64_t skipped_self() const { return skipped_self_; }
  uint64_t max_late_ns() const { return max_late_; }

 private:
  uint64_t At(uint64_t k) const { return start_ + uint64_t(double(k) * 1e9 / per_second_); }

  double per_second_;
  uint64_t start_, max_lag_, max_burst_;
  uint64_t k_ = 0;  // sends scheduled so far (made or skipped)
  uint64_t sent_ = 0, skipped_backpressure_ = 0, skipped_self_ = 0, max_late_ = 0;
};

}  // namespace qbridge::bench
