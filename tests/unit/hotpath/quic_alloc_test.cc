// The QUIC connection's steady state allocates nothing per datagram: a bulk transfer over
// the in-process link, both ends on this thread, allocations counted once the transfer is
// under way (the handshake, the first window growth and the stream's first queue blocks
// allocate and are left out).
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

TEST(QuicAllocTest, BulkTransferAllocatesNothingPerDatagram) {
  if (!qbridge::testing::AllocCounting()) GTEST_SKIP() << "allocations are not counted here";
  static const qbridge::testing::TestTls tls;
  qbridge::testing::LinkConfig link;
  link.delay_ns = 100 * kMillisecond / 1000;
  link.bandwidth_bps = 10'000'000'000;
  link.min_step_ns = 20'000;
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
  ASSERT_TRUE(sim.RunUntil([&] { return client_events.confirmed; }, 5 * kSecond));
  const int64_t sid = *client->OpenStream();
  constexpr size_t kChunk = 64 * 1024, kChunks = 256;  // 16 MiB
  const Buffer chunk = Buffer::Copy(std::vector<uint8_t>(kChunk, 0x42));
  for (size_t i = 0; i < kChunks; ++i) ASSERT_TRUE(client->Send(sid, chunk).ok());
  const std::function<bool()> quarter = [&] { return server_events.received >= kChunk * kChunks / 4; };
  const std::function<bool()> done = [&] { return server_events.received >= kChunk * kChunks; };
  ASSERT_TRUE(sim.RunUntil(quarter, 10 * kSecond));
  const uint64_t datagrams = sim.delivered_to_server + sim.delivered_to_client;
  AllocScope scope;
  ASSERT_TRUE(sim.RunUntil(done, 30 * kSecond));
  const uint64_t n = sim.delivered_to_server + sim.delivered_to_client - datagrams;
  const uint64_t allocs = scope.Count();
  RecordProperty("datagrams", std::to_string(n));
  RecordProperty("allocations", std::to_string(allocs));
  printf("datagrams %lu allocations %lu\n", n, allocs);
  EXPECT_GT(n, 5'000u);
  EXPECT_LE(allocs, n / 100) << "allocations per datagram: " << double(allocs) / n;
}

}  // namespace
}  // namespace qbridge::quic
