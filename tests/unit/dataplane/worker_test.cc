// Steering between worker cores: a short-header datagram whose DCID names another core, or
// one addressed to another core's bridge port, is handed to that core over their ring (one
// copy) and counted on both sides.
#include "dataplane/worker/worker.h"

#include <gtest/gtest.h>

#include <deque>
#include <vector>

#include "tests/support/quic_test_util.h"

namespace qbridge::dp {
namespace {

// A packet backend made of queues: what the test puts in is received.
struct QueueIo {
  std::deque<std::pair<quic::Path, std::vector<uint8_t>>> in;
  size_t sent = 0;
  template <typename Fn>
  size_t Receive(uint64_t, Fn&& fn) {
    size_t n = 0;
    for (; !in.empty(); in.pop_front(), ++n) fn(in.front().first, std::span<const uint8_t>(in.front().second));
    return n;
  }
  void Send(const quic::Path&, std::span<const uint8_t>, size_t) { ++sent; }
};

// Two worker cores joined by their rings, each with a listener (and, given `north_ports`,
// sharing one address as a DPDK port's queues do).
struct TwoWorkers {
  testing::TestTls tls;
  RingMesh rings{2};
  ActivityTable act0{64}, act1{64};
  std::unique_ptr<Worker> w[2];

  ::testing::AssertionResult Create(std::vector<uint16_t> north_ports = {}) {
    if (!tls.ok()) return ::testing::AssertionFailure() << "TLS";
    ActivityTable* acts[2] = {&act0, &act1};
    for (uint16_t core = 0; core < 2; ++core) {
      WorkerConfig c;
      c.core = core;
      c.max_conns = 64;
      c.server_tls = tls.server.get();
      c.north_ports = north_ports;
      auto made = Worker::Create(std::move(c), &rings, acts[core]);
      if (!made.ok()) return ::testing::AssertionFailure() << made.status();
      w[core] = std::move(*made);
    }
    return ::testing::AssertionSuccess();
  }
};

TEST(WorkerSteering, DatagramForAnotherCoresCidGoesOverItsRing) {
  TwoWorkers t;
  ASSERT_TRUE(t.Create());
  auto& w = t.w;
  QueueIo io0, io1;
  const quic::Path path{quic::Address::FromIpPort("198.18.0.2", 14567),
                        quic::Address::FromIpPort("198.18.0.1", 50000)};
  // Short header, 16-byte DCID whose owner bytes (1-2) name core 1.
  std::vector<uint8_t> d(1 + quic::kServerCidLen + 40, 0x5a);
  d[0] = 0x40;
  d[1] = 0;     // CID byte 0: QUIC-LB config rotation
  d[2] = 0x00;  // owner, big-endian: core 1
  d[3] = 0x01;
  io0.in.emplace_back(path, d);
  // A datagram for core 0's own CID stays on core 0.
  std::vector<uint8_t> own = d;
  own[3] = 0x00;
  io0.in.emplace_back(path, own);
  const uint64_t now = quic::kSecond;
  w[0]->PollOnce(io0, now);
  EXPECT_EQ(w[0]->stats().cid_forwarded.Get(), 1u);
  EXPECT_EQ(w[0]->stats().rx_datagrams.Get(), 2u);
  EXPECT_EQ(w[0]->endpoint()->stats().datagrams_in, 1u);
  w[1]->PollOnce(io1, now);
  EXPECT_EQ(w[1]->stats().cid_received.Get(), 1u);
  // Core 1's endpoint saw it with its path intact (unknown to it: counted, not crashed).
  EXPECT_EQ(w[1]->endpoint()->stats().datagrams_in, 1u);
  EXPECT_EQ(w[1]->stats().cid_forwarded.Get(), 0u);  // never bounced back
  // The block came from core 0's pool (no allocation) and goes back to it.
  EXPECT_EQ(w[0]->stats().ring_heap_blocks.Get(), 0u);
  const size_t free_after_send = w[0]->ring_blocks_free();
  w[0]->PollOnce(io0, now);
  EXPECT_EQ(w[0]->ring_blocks_free(), free_after_send + 1);
}

// Workers sharing one address (DPDK queues): the UDP port a datagram is addressed to names
// the worker whose bridges dial from it, whatever its CID looks like.
TEST(WorkerSteering, DatagramToAnotherCoresBridgePortGoesOverItsRing) {
  TwoWorkers t;
  ASSERT_TRUE(t.Create({50001, 50002}));
  auto& w = t.w;
  QueueIo io0, io1;
  // From an upstream to core 1's bridge port; a long-header Initial whose random DCID
  // would name core 0 if it were read as ours.
  const quic::Path to_core1{quic::Address::FromIpPort("198.18.0.2", 50002),
                            quic::Address::FromIpPort("198.18.0.9", 14567)};
  std::vector<uint8_t> d(1200, 0);
  d[0] = 0xc0;                 // long header, Initial
  d[1] = 0, d[2] = 0, d[3] = 0, d[4] = 1;  // version 1
  d[5] = 16;                   // DCID length
  io0.in.emplace_back(to_core1, d);
  // To core 0's own bridge port: stays (no bridge: the endpoint counts it).
  const quic::Path to_core0{quic::Address::FromIpPort("198.18.0.2", 50001), to_core1.remote};
  io0.in.emplace_back(to_core0, d);
  const uint64_t now = quic::kSecond;
  w[0]->PollOnce(io0, now);
  EXPECT_EQ(w[0]->stats().cid_forwarded.Get(), 1u);
  EXPECT_EQ(w[0]->endpoint()->stats().datagrams_in, 1u);
  w[1]->PollOnce(io1, now);
  EXPECT_EQ(w[1]->stats().cid_received.Get(), 1u);
  EXPECT_EQ(w[1]->endpoint()->stats().datagrams_in, 1u);
  EXPECT_EQ(w[1]->stats().cid_forwarded.Get(), 0u);  // never bounced back
}

}  // namespace
}  // namespace qbridge::dp
