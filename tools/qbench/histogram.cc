#include "tools/qbench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace qbridge::bench {

// Layout: values below sub_count_ have a bucket each (index = value). Above, a value
// with bit width w is shifted right by s = w - sub_bits_ (>= 1), which leaves its top
// sub_bits_ bits, a sub-bucket in [sub_count_/2, sub_count_); magnitude s has
// sub_count_/2 such buckets, each 2^s wide. 2 * 10^digits sub-buckets keep every bucket
// narrower than one unit in the last significant digit.
Histogram::Histogram(int significant_digits, int max_bits) {
  significant_digits = std::clamp(significant_digits, 1, 4);
  const uint64_t needed = 2 * uint64_t(std::pow(10, significant_digits));
  sub_bits_ = int(std::bit_width(needed - 1));
  max_bits_ = std::clamp(max_bits, sub_bits_ + 1, 63);
  sub_count_ = uint64_t(1) << sub_bits_;
  counts_.assign(sub_count_ + size_t(max_bits_ - sub_bits_) * (sub_count_ / 2), 0);
}

size_t Histogram::IndexOf(uint64_t value) const {
  if (value < sub_count_) return size_t(value);
  const int shift = int(std::bit_width(value)) - sub_bits_;
  const uint64_t sub = value >> shift;  // in [sub_count_/2, sub_count_)
  return size_t(sub_count_ + uint64_t(shift - 1) * (sub_count_ / 2) + (sub - sub_count_ / 2));
}

uint64_t Histogram::LowestAt(size_t index) const {
  if (index < sub_count_) return index;
  const uint64_t over = index - sub_count_;
  const int shift = int(over / (sub_count_ / 2)) + 1;
  const uint64_t sub = over % (sub_count_ / 2) + sub_count_ / 2;
  return sub << shift;
}

uint64_t Histogram::LowestEquivalent(uint64_t value) const { return LowestAt(IndexOf(value)); }

uint64_t Histogram::HighestEquivalent(uint64_t value) const {
  const size_t i = IndexOf(value);
  return i + 1 < counts_.size() ? LowestAt(i + 1) - 1 : UINT64_MAX;
}

void Histogram::Record(uint64_t value, uint64_t count) {
  if (count == 0) return;
  const uint64_t top = (uint64_t(1) << max_bits_) - 1;
  if (value > top) {
    saturated_ += count;
    value = top;
  }
  counts_[IndexOf(value)] += count;
  if (total_ == 0 || value < min_) min_ = value;
  max_ = std::max(max_, value);
  total_ += count;
  sum_ += double(value) * double(count);
}

bool Histogram::Merge(const Histogram& other) {
  if (other.sub_bits_ != sub_bits_ || other.max_bits_ != max_bits_) return false;
  if (other.total_ == 0) return true;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  min_ = total_ ? std::min(min_, other.min_) : other.min_;
  max_ = std::max(max_, other.max_);
  total_ += other.total_;
  saturated_ += other.saturated_;
  sum_ += other.sum_;
  return true;
}

void Histogram::Reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_ = min_ = max_ = saturated_ = 0;
  sum_ = 0;
}

uint64_t Histogram::ValueAtPercentile(double percentile) const {
  if (total_ == 0) return 0;
  percentile = std::clamp(percentile, 0.0, 100.0);
  // The rank of the value asked for, 1-based; at least the first value.
  const uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(percentile / 100.0 * double(total_))));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const uint64_t high = i + 1 < counts_.size() ? LowestAt(i + 1) - 1 : max_;
      return std::min(high, max_);  // the top bucket never reports past what was seen
    }
  }
  return max_;
}

}  // namespace qbridge::bench
