// Time as every core sees it: nanoseconds on one monotonic clock, the same unit as
// ngtcp2_tstamp. Only poll loops and Clock read the clock; everything else takes `now`.
#pragma once

#include <time.h>

#include <cstdint>

namespace qbridge::dp {

using MonoNs = uint64_t;
inline constexpr MonoNs kNeverNs = UINT64_MAX;
inline constexpr uint64_t kMsNs = 1'000'000;
inline constexpr uint64_t kSecNs = 1'000'000'000;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoNs Now() const = 0;
};

// CLOCK_MONOTONIC through the vDSO (about 20 ns).
class SystemClock final : public Clock {
 public:
  MonoNs Now() const override {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return MonoNs(ts.tv_sec) * kSecNs + MonoNs(ts.tv_nsec);
  }
};

// Tests advance time by hand: a run is a function of its inputs, never of the machine.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(MonoNs start = kSecNs) : now_(start) {}
  MonoNs Now() const override { return now_; }
  void Advance(uint64_t ns) { now_ += ns; }
  void Set(MonoNs t) { now_ = t; }

 private:
  MonoNs now_;
};

}  // namespace qbridge::dp
