// The QUIC connection's steady state allocates nothing per datagram: a bulk transfer over
// the in-process link, both ends (and the link) on this thread, allocations counted once
// the transfer is under way (the handshake, the first window growth and the stream's
// first queue blocks allocate and are left out).
#include <gtest/gtest.h>

#include "tests/support/alloc_count.h"
#include "tests/support/quic_sim.h"
#include "tests/support/quic_test_util.h"

namespace qbridge::quic {
namespace {

using qbridge::testing::AllocScope;

class Sink : public ConnectionEvents {
 public:
  bool confirmed = false;
  uint64_t received = 0;
  void OnHandshakeConfirmed() override { confirmed = true; }
  void OnStreamData(int64_t, std::span<const uint8_t> d, bool) override { received += d.size(); }
};

struct Transfer {
  uint64_t datagrams = 0, allocations = 0, dropped = 0;
};

// 16 MiB on one stream; allocations counted from the first quarter to the end.
Transfer BulkTransfer(const qbridge::testing::LinkConfig& link) {
  static const qbridge::testing::TestTls tls;
  qbridge::testing::QuicSim sim(link);
  EndpointConfig ec;
  ec.retry = RetryMode::kOff;
  auto endpoint = std::move(*ServerEndpoint::Create(*tls.server, ec));
  Sink server_events, client_events;
  endpoint->set_on_accept([&](Connection&) { return &server_events; });
  auto client = std::move(*Connection::Connect(*tls.client, TransportConfig{}, sim.ClientPath(),
                                               &client_events, sim.now()));
  sim.client = client.get();
  sim.server = endpoint.get();
  EXPECT_TRUE(sim.RunUntil([&] { return client_events.confirmed; }, 5 * kSecond));
  const int64_t sid = *client->OpenStream();
  constexpr size_t kChunk = 64 * 1024, kChunks = 256;
  const Buffer chunk = Buffer::Copy(std::vector<uint8_t>(kChunk, 0x42));
  for (size_t i = 0; i < kChunks; ++i) EXPECT_TRUE(client->Send(sid, chunk).ok());
  const std::function<bool()> quarter = [&] { return server_events.received >= kChunk * kChunks / 4; };
  const std::function<bool()> done = [&] { return server_events.received >= kChunk * kChunks; };
  EXPECT_TRUE(sim.RunUntil(quarter, 10 * kSecond));
  const uint64_t datagrams = sim.delivered_to_server + sim.delivered_to_client;
  const uint64_t dropped = sim.dropped;
  AllocScope scope;
  EXPECT_TRUE(sim.RunUntil(done, 60 * kSecond));
  Transfer t;
  t.allocations = scope.Count();
  t.datagrams = sim.delivered_to_server + sim.delivered_to_client - datagrams;
  t.dropped = sim.dropped - dropped;
  return t;
}

TEST(QuicAllocTest, BulkTransferAllocatesNothingPerDatagram) {
  if (!qbridge::testing::AllocCounting()) GTEST_SKIP() << "allocations are not counted here";
  qbridge::testing::LinkConfig link;
  link.delay_ns = 100 * kMillisecond / 1000;
  link.min_step_ns = 20'000;
  const Transfer t = BulkTransfer(link);
  RecordProperty("allocations_per_1000_datagrams", std::to_string(1000.0 * t.allocations / t.datagrams));
  printf("clean link: %lu datagrams, %lu allocations\n", t.datagrams, t.allocations);
  EXPECT_GT(t.datagrams, 5'000u);
  EXPECT_EQ(t.dropped, 0u);
  EXPECT_LE(t.allocations, t.datagrams / 200) << "allocations per datagram: " << double(t.allocations) / t.datagrams;
}

// Loss recovery (ack ranges, out-of-order data, retransmissions) draws on ngtcp2's
// per-thread cache once it has grown: allocations stay far below one per datagram.
TEST(QuicAllocTest, LossRecoveryAllocatesRarely) {
  if (!qbridge::testing::AllocCounting()) GTEST_SKIP() << "allocations are not counted here";
  qbridge::testing::LinkConfig link;
  link.delay_ns = 100 * kMillisecond / 1000;
  link.min_step_ns = 20'000;
  link.loss = 0.01;
  const Transfer t = BulkTransfer(link);
  RecordProperty("allocations_per_1000_datagrams", std::to_string(1000.0 * t.allocations / t.datagrams));
  printf("1%% loss: %lu datagrams, %lu dropped, %lu allocations\n", t.datagrams, t.dropped, t.allocations);
  EXPECT_GT(t.datagrams, 5'000u);
  EXPECT_GT(t.dropped, 20u);
  EXPECT_LE(t.allocations, t.datagrams / 200) << "allocations per datagram: " << double(t.allocations) / t.datagrams;
}

}  // namespace
}  // namespace qbridge::quic
