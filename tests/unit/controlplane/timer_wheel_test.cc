#include "controlplane/timer_wheel.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <vector>

namespace qbridge::cp {
namespace {

constexpr uint64_t kTick = dp::kMsNs;

TEST(TimerWheel, FiresAtDeadlineNeverBefore) {
  TimerWheel w(kTick, 0);
  w.Schedule(5 * kTick, 1);
  w.Schedule(5 * kTick + 1, 2);  // rounds up to tick 6
  std::vector<uint64_t> fired;
  auto fn = [&](TimerId, uint64_t c) { fired.push_back(c); };
  EXPECT_EQ(w.Advance(5 * kTick - 1, fn), 0u);
  EXPECT_EQ(w.Advance(5 * kTick, fn), 1u);
  EXPECT_EQ(fired, std::vector<uint64_t>{1});
  EXPECT_EQ(w.Advance(6 * kTick - 1, fn), 0u);
  EXPECT_EQ(w.Advance(6 * kTick, fn), 1u);
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, PastDeadlineFiresOnNextAdvance) {
  TimerWheel w(kTick, 100 * kTick);
  w.Schedule(3 * kTick, 7);
  EXPECT_EQ(w.NextExpiry(), 100 * kTick);
  int n = 0;
  EXPECT_EQ(w.Advance(100 * kTick, [&](TimerId, uint64_t c) { n += int(c); }), 1u);
  EXPECT_EQ(n, 7);
}

TEST(TimerWheel, CancelAndStaleIds) {
  TimerWheel w(kTick, 0);
  TimerId a = w.Schedule(10 * kTick, 1);
  TimerId b = w.Schedule(10 * kTick, 2);
  EXPECT_TRUE(w.Cancel(a));
  EXPECT_FALSE(w.Cancel(a));
  std::vector<uint64_t> fired;
  w.Advance(20 * kTick, [&](TimerId id, uint64_t c) {
    fired.push_back(c);
    EXPECT_EQ(id, b);
  });
  EXPECT_EQ(fired, std::vector<uint64_t>{2});
  EXPECT_FALSE(w.Cancel(b));  // already fired
  TimerId c = w.Schedule(30 * kTick, 3);  // reuses a slot with a new generation
  EXPECT_FALSE(w.Cancel(a));
  EXPECT_FALSE(w.Reschedule(b, 40 * kTick));
  EXPECT_TRUE(w.Reschedule(c, 40 * kTick));
  EXPECT_EQ(w.Advance(39 * kTick, [](TimerId, uint64_t) {}), 0u);
  EXPECT_EQ(w.Advance(40 * kTick, [](TimerId, uint64_t) {}), 1u);
}

TEST(TimerWheel, CallbackMaySchedule) {
  TimerWheel w(kTick, 0);
  w.Schedule(kTick, 1);
  std::vector<uint64_t> fired;
  w.Advance(10 * kTick, [&](TimerId, uint64_t c) {
    fired.push_back(c);
    if (c == 1) w.Schedule(0, 2);            // already due: fires in this call
    if (c == 1) w.Schedule(5 * kTick, 3);    // due within this call's span
    if (c == 1) w.Schedule(50 * kTick, 4);   // later
  });
  EXPECT_EQ(fired, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(w.size(), 1u);
}

TEST(TimerWheel, FarDeadlinesBeyondTheWheel) {
  TimerWheel w(kTick, 0);
  const uint64_t far = (uint64_t(1) << 33) * kTick;  // twice the wheel's span
  w.Schedule(far, 1);
  w.Schedule(far + kTick, 2);
  std::vector<uint64_t> fired;
  auto fn = [&](TimerId, uint64_t c) { fired.push_back(c); };
  // Walk in big steps: the wheel must re-file them on the way without firing early.
  for (uint64_t t = 0; t < far; t += (uint64_t(1) << 27) * kTick) w.Advance(t, fn);
  w.Advance(far - 1, fn);
  EXPECT_TRUE(fired.empty());
  w.Advance(far, fn);
  EXPECT_EQ(fired, std::vector<uint64_t>{1});
  w.Advance(far + kTick, fn);
  EXPECT_EQ(fired, (std::vector<uint64_t>{1, 2}));
}

// Against a reference model: random schedules, cancels, reschedules and clock jumps of
// every size; each timer fires exactly once, at the first Advance at or after its
// deadline (rounded up to the tick), never before.
TEST(TimerWheel, MatchesReferenceModel) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    TimerWheel w(kTick, 12345 * kTick + 17);
    MonoNs now = 12345 * kTick + 17;
    std::map<uint64_t, std::pair<TimerId, MonoNs>> live;  // cookie -> (id, deadline)
    uint64_t next_cookie = 0;
    for (int step = 0; step < 3000; ++step) {
      const int op = int(rng() % 10);
      if (op < 5) {
        const int scale = int(rng() % 5);
        const uint64_t span[] = {300 * kTick, 70'000 * kTick, 20'000'000 * kTick,
                                 5'000'000'000 * kTick, kTick};
        const MonoNs d = now + rng() % span[scale] - (rng() % 4 == 0 ? std::min(now, kTick) : 0);
        const uint64_t c = next_cookie++;
        live[c] = {w.Schedule(d, c), d};
      } else if (op < 6 && !live.empty()) {
        auto it = live.begin();
        std::advance(it, rng() % live.size());
        ASSERT_TRUE(w.Cancel(it->second.first));
        live.erase(it);
      } else if (op < 7 && !live.empty()) {
        auto it = live.begin();
        std::advance(it, rng() % live.size());
        const MonoNs d = now + rng() % (100'000 * kTick);
        ASSERT_TRUE(w.Reschedule(it->second.first, d));
        it->second.second = d;
      } else {
        const uint64_t jumps[] = {kTick / 3, kTick, 200 * kTick, 100'000 * kTick,
                                  30'000'000 * kTick};
        if (!live.empty()) {
          MonoNs earliest = dp::kNeverNs;
          for (auto& [c, v] : live) earliest = std::min(earliest, (v.second + kTick - 1) / kTick * kTick);
          ASSERT_LE(w.NextExpiry(), earliest) << "NextExpiry after the earliest deadline";
        } else {
          ASSERT_EQ(w.NextExpiry(), dp::kNeverNs);
        }
        now += rng() % jumps[rng() % 5] + 1;
        std::set<uint64_t> fired;
        w.Advance(now, [&](TimerId id, uint64_t c) {
          auto it = live.find(c);
          ASSERT_NE(it, live.end()) << "fired twice or after cancel: " << c;
          EXPECT_EQ(it->second.first, id);
          EXPECT_LE((it->second.second + kTick - 1) / kTick * kTick, now) << "fired early";
          fired.insert(c);
        });
        for (uint64_t c : fired) live.erase(c);
        for (auto& [c, v] : live) {
          ASSERT_GT((v.second + kTick - 1) / kTick * kTick, now) << "missed timer " << c;
        }
      }
      ASSERT_EQ(w.size(), live.size());
    }
  }
}

TEST(TimerWheel, NextExpiryIsNeverAfterTheEarliestDeadline) {
  TimerWheel w(kTick, 0);
  EXPECT_EQ(w.NextExpiry(), dp::kNeverNs);
  w.Schedule(100'000 * kTick, 1);
  MonoNs now = 0;
  int fired = 0;
  // Stepping from NextExpiry to NextExpiry reaches the deadline in few steps.
  for (int i = 0; i < 1000 && !fired; ++i) {
    const MonoNs next = w.NextExpiry();
    ASSERT_LE(next, 100'000 * kTick);
    now = std::max(now + 1, next);
    fired += int(w.Advance(now, [](TimerId, uint64_t) {}));
  }
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(now, 100'000 * kTick);
}

}  // namespace
}  // namespace qbridge::cp
