// qbench's measuring parts: the HDR histogram against sorted samples, the per-publisher
// sequence checker, and open-loop pacing on a manual clock.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tools/qbench/histogram.h"
#include "tools/qbench/rate.h"
#include "tools/qbench/sequence.h"

namespace qbridge::bench {
namespace {

TEST(HistogramTest, SmallValuesAreExact) {
  Histogram h(3);
  for (uint64_t v = 0; v < 2000; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 2000u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 1999u);
  EXPECT_EQ(h.ValueAtPercentile(50), 999u);
  EXPECT_EQ(h.ValueAtPercentile(100), 1999u);
  EXPECT_DOUBLE_EQ(h.mean(), 999.5);
}

TEST(HistogramTest, PercentilesHoldTheirSignificantDigitsAcrossTheRange) {
  // Latencies from 1 us to 10 s (log-uniform): every percentile is within 0.1 % above the
  // exact one (3 digits) and never below it.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> exp10(3, 10);
  std::vector<uint64_t> v;
  Histogram h(3);
  for (int i = 0; i < 200'000; ++i) {
    v.push_back(uint64_t(std::pow(10, exp10(rng))));
    h.Record(v.back());
  }
  std::sort(v.begin(), v.end());
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99}) {
    const uint64_t exact = v[size_t(std::ceil(p / 100 * double(v.size()))) - 1];
    const uint64_t got = h.ValueAtPercentile(p);
    EXPECT_GE(got, exact) << "p" << p;
    EXPECT_LE(double(got), double(exact) * 1.001) << "p" << p;
  }
  EXPECT_EQ(h.max(), v.back());
  EXPECT_EQ(h.min(), v.front());
}

TEST(HistogramTest, BucketsAreNarrowerThanTheLastDigit) {
  for (int digits : {1, 2, 3, 4}) {
    Histogram h(digits);
    const double unit = std::pow(10, -digits);
    for (uint64_t v : {uint64_t(1) << 20, uint64_t(123456789), uint64_t(1) << 40}) {
      EXPECT_LE(v, h.HighestEquivalent(v));
      EXPECT_GE(v, h.LowestEquivalent(v));
      EXPECT_LT(double(h.HighestEquivalent(v) - h.LowestEquivalent(v)) / double(v), unit) << digits;
    }
  }
}

TEST(HistogramTest, MergesAndSaturates) {
  Histogram a(2, 20), b(2, 20), other(3, 20);
  a.Record(100, 3);
  b.Record(5000);
  b.Record(uint64_t(1) << 30);  // over 2^20: counted at the top
  EXPECT_EQ(b.saturated(), 1u);
  EXPECT_EQ(b.max(), (uint64_t(1) << 20) - 1);
  ASSERT_TRUE(a.Merge(b));
  EXPECT_FALSE(a.Merge(other));
  EXPECT_EQ(a.count(), 5u);
  EXPECT_EQ(a.min(), 100u);
  EXPECT_EQ(a.saturated(), 1u);
  EXPECT_EQ(a.ValueAtPercentile(60), 100u);  // rank 3 of 5
  EXPECT_GE(a.ValueAtPercentile(80), 5000u);
  a.Reset();
  EXPECT_EQ(a.count(), 0u);
  EXPECT_EQ(a.ValueAtPercentile(99), 0u);
}

TEST(SequenceCheckerTest, CountsHolesLateArrivalsAndDuplicates) {
  SequenceChecker c;
  for (uint64_t s : {0, 1, 2}) EXPECT_EQ(c.Observe(s), SequenceChecker::Verdict::kInOrder);
  EXPECT_EQ(c.Observe(5), SequenceChecker::Verdict::kGap);  // 3 and 4 missing
  EXPECT_EQ(c.missing(), 2u);
  EXPECT_EQ(c.Observe(3), SequenceChecker::Verdict::kLate);  // fills one
  EXPECT_EQ(c.missing(), 1u);
  EXPECT_EQ(c.Observe(3), SequenceChecker::Verdict::kDuplicate);
  EXPECT_EQ(c.Observe(5), SequenceChecker::Verdict::kDuplicate);
  EXPECT_EQ(c.Observe(6), SequenceChecker::Verdict::kInOrder);
  EXPECT_EQ(c.received(), 8u);
  EXPECT_EQ(c.unique(), 6u);
  EXPECT_EQ(c.duplicates(), 2u);
  EXPECT_EQ(c.reordered(), 1u);
  EXPECT_EQ(c.missing(), 1u);  // 4
  EXPECT_EQ(c.next(), 7u);
}

TEST(SequenceCheckerTest, MissingFromTheStartCounts) {
  SequenceChecker c;
  c.Observe(10);
  EXPECT_EQ(c.missing(), 10u);
}

TEST(SequenceCheckerTest, TheWindowSlidesWithoutStaleMarks) {
  SequenceChecker c;
  const uint64_t w = SequenceChecker::kWindow;
  for (uint64_t s = 0; s < 3 * w; s += 2) c.Observe(s);  // every odd number missing
  EXPECT_EQ(c.missing(), 3 * w / 2 - 1);
  // An odd number inside the window is late, not a duplicate (its slot held an older even
  // number, cleared when the window slid).
  EXPECT_EQ(c.Observe(3 * w - 3), SequenceChecker::Verdict::kLate);
  EXPECT_EQ(c.Observe(3 * w - 4), SequenceChecker::Verdict::kDuplicate);
  const uint64_t holes = c.missing();
  EXPECT_EQ(c.Observe(1), SequenceChecker::Verdict::kTooOld);
  EXPECT_EQ(c.missing(), holes - 1);  // taken to fill a hole
  // A jump past the whole window clears it.
  c.Observe(10 * w);
  EXPECT_EQ(c.Observe(10 * w - 2), SequenceChecker::Verdict::kLate);
  EXPECT_EQ(c.duplicates(), 1u);
  EXPECT_EQ(c.too_old(), 1u);
}

TEST(SequenceCheckerTest, TheBookKeepsPublishersAndSubscribersApart) {
  SequenceBook book;
  for (uint64_t s = 0; s < 100; ++s) {
    book.Observe(/*publisher=*/1, /*subscriber=*/0, s);
    book.Observe(2, 0, s);
    book.Observe(1, 1, s);  // a second subscriber hears publisher 1 too
  }
  book.Observe(2, 0, 50);   // a duplicate
  book.Observe(2, 0, 102);  // 100 and 101 missing
  const SequenceBook::Totals t = book.Sum();
  EXPECT_EQ(t.streams, 3u);
  EXPECT_EQ(t.received, 302u);
  EXPECT_EQ(t.unique, 301u);
  EXPECT_EQ(t.duplicates, 1u);
  EXPECT_EQ(t.missing, 2u);
}

constexpr uint64_t kS = 1'000'000'000;

TEST(RateControllerTest, PacesOpenLoopFromItsStart) {
  RateController r(1000, /*start=*/5 * kS);  // one per ms
  EXPECT_EQ(r.next(), 5 * kS);
  EXPECT_EQ(r.Due(5 * kS - 1), 0u);
  EXPECT_EQ(r.Due(5 * kS), 1u);
  r.Sent(1, 5 * kS);
  EXPECT_EQ(r.next(), 5 * kS + 1'000'000);
  // 10.5 ms later: sends 1..10 are due (open loop: the schedule does not wait).
  EXPECT_EQ(r.Due(5 * kS + 10'500'000), 10u);
  r.Sent(10, 5 * kS + 10'500'000);
  EXPECT_EQ(r.max_late_ns(), 9'500'000u);  // send 1 was due at 1 ms
  EXPECT_EQ(r.Due(5 * kS + 10'500'000), 0u);
  EXPECT_EQ(r.sent(), 11u);
}

TEST(RateControllerTest, CatchesUpInBoundedBurstsThenGivesUp) {
  RateController r(1'000'000, 0, /*max_lag_ns=*/kS, /*max_burst=*/100);
  EXPECT_EQ(r.Due(kS / 2), 100u);  // 500,001 due, a burst at a time
  r.Sent(100, kS / 2);
  r.Behind(kS / 2, false);  // half a second behind: still catching up
  EXPECT_EQ(r.skipped_self(), 0u);
  // Three seconds in with 100 sent: more than 1 s behind, the missed sends are dropped.
  r.Behind(3 * kS, /*backpressure=*/false);
  EXPECT_GT(r.skipped_self(), 2'999'000u);
  EXPECT_EQ(r.skipped_backpressure(), 0u);
  EXPECT_LE(r.Due(3 * kS), 100u);
  EXPECT_GE(r.next(), 3 * kS - 1000);
  RateController bp(1000, 0);
  bp.Behind(5 * kS, /*backpressure=*/true);
  EXPECT_GT(bp.skipped_backpressure(), 4000u);
  EXPECT_EQ(bp.skipped_self(), 0u);
}

TEST(RateControllerTest, ZeroRateIsIdle) {
  RateController r(0, 0);
  EXPECT_FALSE(r.active());
  EXPECT_EQ(r.next(), UINT64_MAX);
  EXPECT_EQ(r.Due(100 * kS), 0u);
  r.Behind(100 * kS, false);
  EXPECT_EQ(r.skipped_self(), 0u);
}

}  // namespace
}  // namespace qbridge::bench
