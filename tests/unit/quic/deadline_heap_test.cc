// The endpoint's deadline heap against a plain map of slot -> deadline: random sets, moves
// and removals keep the minimum and every slot's value right.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "quic/deadline_heap.h"

namespace qbridge::quic {
namespace {

TEST(DeadlineHeapTest, KeepsTheEarliestThroughMovesAndRemovals) {
  DeadlineHeap h;
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.Top(), DeadlineHeap::kNever);
  h.Set(3, 30);
  h.Set(1, 10);
  h.Set(2, 20);
  EXPECT_EQ(h.Top(), 10u);
  EXPECT_EQ(h.TopSlot(), 1u);
  h.Set(1, 40);  // later: another slot comes first
  EXPECT_EQ(h.TopSlot(), 2u);
  h.Set(3, 5);  // earlier
  EXPECT_EQ(h.TopSlot(), 3u);
  h.Remove(3);
  h.Remove(3);  // twice: nothing
  EXPECT_EQ(h.TopSlot(), 2u);
  h.Set(2, DeadlineHeap::kNever);  // kNever removes
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(h.Get(1), 40u);
  EXPECT_EQ(h.Get(2), DeadlineHeap::kNever);
}

TEST(DeadlineHeapTest, MatchesAReferenceUnderRandomOperations) {
  std::mt19937 rng(42);
  DeadlineHeap h;
  std::map<uint32_t, uint64_t> ref;
  for (int i = 0; i < 200'000; ++i) {
    const uint32_t slot = rng() % 500;
    switch (rng() % 4) {
      case 0:
        h.Remove(slot);
        ref.erase(slot);
        break;
      default: {
        const uint64_t at = rng() % 10'000;
        h.Set(slot, at);
        ref[slot] = at;
      }
    }
    ASSERT_EQ(h.size(), ref.size());
    uint64_t min = DeadlineHeap::kNever;
    for (const auto& [s, at] : ref) min = std::min(min, at);
    ASSERT_EQ(h.Top(), min);
    if (!h.empty()) {
      ASSERT_EQ(ref.at(h.TopSlot()), min);
    }
    ASSERT_EQ(h.Get(slot), ref.count(slot) ? ref[slot] : DeadlineHeap::kNever);
  }
}

}  // namespace
}  // namespace qbridge::quic
