// A high-dynamic-range histogram (Gil Tene's HdrHistogram layout): values are counted in
// buckets whose width grows with the value, so every recorded value is kept to a fixed
// number of significant decimal digits across the whole range (1 ns to hours) in a fixed,
// small array, and recording is a few shifts and one increment. Histograms of one shape
// merge by adding counts: per-connection or per-second windows roll up into the summary.
//
// Debian packages HdrHistogram only for Java and Go, so qbench carries this one (about
// 100 lines, tested against sorted samples in tests/unit/tools/qbench_test.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qbridge::bench {

class Histogram {
 public:
  // Values 0 .. 2^max_bits - 1 kept to `significant_digits` (1..4) decimal digits; larger
  // values are counted at the top and in saturated().
  explicit Histogram(int significant_digits = 3, int max_bits = 42);

  void Record(uint64_t value, uint64_t count = 1);
  // Adds another histogram's counts; false (and nothing added) when the shapes differ.
  bool Merge(const Histogram& other);
  void Reset();

  uint64_t count() const { return total_; }
  uint64_t min() const { return total_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return total_ ? sum_ / double(total_) : 0; }
  uint64_t saturated() const { return saturated_; }

  // The smallest recorded value v such that at least `percentile`% of all values are <= v,
  // reported as the highest value its bucket stands for (never below the true value, at
  // most one bucket width above it). 0 when empty.
  uint64_t ValueAtPercentile(double percentile) const;

  // Bucket geometry, for tests: the range of values a recorded value is counted with.
  uint64_t LowestEquivalent(uint64_t value) const;
  uint64_t HighestEquivalent(uint64_t value) const;

 private:
  size_t IndexOf(uint64_t value) const;
  uint64_t LowestAt(size_t index) const;

  int sub_bits_;      // log2 of the sub-buckets per magnitude
  int max_bits_;
  uint64_t sub_count_;  // 2^sub_bits_
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0, min_ = 0, max_ = 0, saturated_ = 0;
  double sum_ = 0;
};

}  // namespace qbridge::bench
