#include "dataplane/api/ring.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "dataplane/api/msg.h"
#include "dataplane/api/ring_mesh.h"

namespace qbridge::dp {
namespace {

TEST(SpscRing, RefusesWhatDoesNotFitAndCountsIt) {
  SpscRing<uint64_t> r(4);
  EXPECT_EQ(r.capacity(), 4u);
  std::vector<uint64_t> in = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(r.EnqueueBurst(in), 4u);
  EXPECT_EQ(r.refused(), 2u);
  EXPECT_EQ(r.high_water(), 4u);
  uint64_t out[8];
  EXPECT_EQ(r.DequeueBurst(std::span<uint64_t>(out, 3)), 3u);
  EXPECT_EQ(out[0], 1u);
  EXPECT_EQ(out[2], 3u);
  EXPECT_TRUE(r.Enqueue(7));
  EXPECT_EQ(r.DequeueBurst(out), 2u);
  EXPECT_EQ(out[0], 4u);
  EXPECT_EQ(out[1], 7u);
  EXPECT_EQ(r.DequeueBurst(out), 0u);
}

// A producer and a consumer thread move a million sequenced messages through a small ring:
// nothing lost, duplicated or reordered, whatever the interleaving.
TEST(SpscRing, TwoThreadsKeepOrder) {
  SpscRing<Msg> r(64);
  constexpr uint64_t kN = 1'000'000;
  std::thread producer([&] {
    Msg batch[16];
    uint64_t next = 0;
    while (next < kN) {
      size_t n = 0;
      for (; n < 16 && next + n < kN; ++n) batch[n].arg = next + n;
      next += r.EnqueueBurst(std::span<const Msg>(batch, n));
    }
  });
  uint64_t expect = 0;
  bool ordered = true;
  Msg out[32];
  while (expect < kN) {
    const size_t n = r.DequeueBurst(out);
    for (size_t i = 0; i < n; ++i) ordered &= out[i].arg == expect++;
  }
  producer.join();
  EXPECT_TRUE(ordered);
  EXPECT_EQ(r.ApproxSize(), 0u);
  EXPECT_LE(r.high_water(), 64u);
}

TEST(Msg, CarriesShortBytesInlineAndLongOnesOnTheHeap) {
  const uint8_t small[2] = {0xC0, 0x00};
  Msg a = MakeMsg(MsgType::kWrite, ConnRef{1, 2, 3}, 0, small);
  EXPECT_EQ(a.heap, nullptr);
  EXPECT_EQ(a.bytes().size(), 2u);
  EXPECT_EQ(a.bytes()[0], 0xC0);
  std::vector<uint8_t> big(100, 7);
  Msg b = MakeMsg(MsgType::kWrite, ConnRef{1, 2, 3}, 4, big);
  EXPECT_NE(b.heap, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(b.bytes().begin(), b.bytes().end()), big);
  ReleaseMsg(a);
  ReleaseMsg(b);
  EXPECT_EQ(b.heap, nullptr);
}

TEST(RingMesh, OneRingPerOrderedPairAndQueuedBlocksFreed) {
  RingMesh mesh(3);
  EXPECT_EQ(mesh.workers(), 3u);
  EXPECT_EQ(mesh.cp(), 3u);
  EXPECT_NE(&mesh.ring(0, 1), &mesh.ring(1, 0));
  std::vector<uint8_t> big(100, 1);
  EXPECT_TRUE(mesh.ring(2, 3).Enqueue(MakeMsg(MsgType::kWrite, ConnRef{}, 0, big)));
  // The mesh's destructor releases the heap block (ASan checks it).
}

}  // namespace
}  // namespace qbridge::dp
