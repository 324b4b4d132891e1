// QUIC over real kernel UDP sockets on loopback: our client and our server endpoint, a
// verified handshake, and a 10 MiB bidirectional echo through GSO/GRO sockets.
#include <gtest/gtest.h>

#include <map>

#include "tests/support/quic_test_util.h"
#include "tests/support/quic_udp_pair.h"
#include "tests/support/test_certs.h"

namespace qbridge::quic {
namespace {

using qbridge::testing::GetTestCerts;
using qbridge::testing::UdpQuicPair;

using Echo = qbridge::testing::RecordingEvents;

TEST(QuicUdp, TenMiBEchoOverLoopbackWithGso) {
  ASSERT_FALSE(GetTestCerts().dir.empty());
  qbridge::testing::TestTls tls("127.0.0.1");  // the client verifies the IP SAN
  ASSERT_TRUE(tls.ok());

  UdpQuicPair pair;
  ASSERT_TRUE(pair.Bind().ok());
  EndpointConfig ec;
  ec.retry = RetryMode::kAlways;  // exercise Retry over a real path too
  auto ep = ServerEndpoint::Create(*tls.server, ec);
  ASSERT_TRUE(ep.ok());
  Echo server_events, client_events;
  server_events.echo = true;
  (*ep)->set_on_accept([&](Connection& c) {
    server_events.conn = &c;
    return &server_events;
  });
  auto client = Connection::Connect(*tls.client, TransportConfig{}, pair.ClientPath(),
                                    &client_events, qbridge::testing::MonotonicNs());
  ASSERT_TRUE(client.ok());
  pair.client = client->get();
  pair.server = ep->get();

  ASSERT_TRUE(pair.RunUntil([&] { return client_events.confirmed; }, 10 * kSecond));
  EXPECT_EQ((*client)->alpn(), "mqtt");
  auto sid = (*client)->OpenStream();
  ASSERT_TRUE(sid.ok());
  constexpr size_t kTotal = 10 << 20;
  std::vector<uint8_t> payload(kTotal);
  for (size_t i = 0; i < kTotal; ++i) payload[i] = uint8_t(i * 7 + (i >> 13));
  ASSERT_TRUE((*client)->Send(*sid, Buffer::Copy(payload), true).ok());
  ASSERT_TRUE(pair.RunUntil([&] { return client_events.fin[*sid]; }, 60 * kSecond))
      << "echoed " << client_events.data[*sid].size() << " of " << kTotal;
  EXPECT_TRUE(client_events.data[*sid] == payload);
  EXPECT_EQ((*ep)->stats().retry_sent, 1u);
  const auto& cs = pair.client_sock->stats();
  if (pair.client_sock->gso()) {
    // GSO really batched: far fewer send calls than datagrams.
    EXPECT_LT(cs.tx_calls * 4, cs.tx_datagrams) << cs.tx_calls << " calls";
  }
  EXPECT_EQ(cs.tx_errors, 0u);
}

}  // namespace
}  // namespace qbridge::quic
