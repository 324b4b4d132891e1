// QUIC over real kernel UDP sockets on loopback: our client and our server endpoint, a
// verified handshake, and a 10 MiB bidirectional echo through GSO/GRO sockets.
#include <gtest/gtest.h>

#include <map>

#include "tests/support/quic_udp_pair.h"
#include "tests/support/test_certs.h"

namespace qbridge::quic {
namespace {

using qbridge::testing::GetTestCerts;
using qbridge::testing::UdpQuicPair;

class Echo : public ConnectionEvents {
 public:
  Connection* conn = nullptr;
  bool echo = false;
  bool confirmed = false;
  std::map<int64_t, std::vector<uint8_t>> data;
  std::map<int64_t, bool> fin;
  void OnHandshakeConfirmed() override { confirmed = true; }
  void OnStreamData(int64_t sid, std::span<const uint8_t> d, bool f) override {
    data[sid].insert(data[sid].end(), d.begin(), d.end());
    if (f) fin[sid] = true;
    if (echo && conn && (!d.empty() || f)) {
      auto copy = std::make_shared<const std::vector<uint8_t>>(d.begin(), d.end());
      EXPECT_TRUE(conn->Send(sid, copy, f).ok());
    }
  }
};

TEST(QuicUdp, TenMiBEchoOverLoopbackWithGso) {
  const auto& certs = GetTestCerts();
  ASSERT_FALSE(certs.dir.empty());
  TlsConfig st;
  st.certfile = certs.server_cert;
  st.keyfile = certs.server_key;
  st.verify_peer = false;
  TlsConfig ct;
  ct.cacertfile = certs.ca;
  ct.server_name = "127.0.0.1";  // verified against the IP SAN
  auto server_tls = TlsContext::Create(TlsContext::Side::kServer, st);
  auto client_tls = TlsContext::Create(TlsContext::Side::kClient, ct);
  ASSERT_TRUE(server_tls.ok() && client_tls.ok());

  UdpQuicPair pair;
  ASSERT_TRUE(pair.Bind().ok());
  EndpointConfig ec;
  ec.retry = RetryMode::kAlways;  // exercise Retry over a real path too
  auto ep = ServerEndpoint::Create(**server_tls, ec);
  ASSERT_TRUE(ep.ok());
  Echo server_events, client_events;
  server_events.echo = true;
  (*ep)->set_on_accept([&](Connection& c) {
    server_events.conn = &c;
    return &server_events;
  });
  auto client = Connection::Connect(**client_tls, TransportConfig{}, pair.ClientPath(),
                                    &client_events, qbridge::testing::MonotonicNs());
  ASSERT_TRUE(client.ok());
  pair.client = client->get();
  pair.server = ep->get();

  ASSERT_TRUE(pair.RunUntil([&] { return client_events.confirmed; }, 10 * kSecond));
  EXPECT_EQ((*client)->alpn(), "mqtt");
  auto sid = (*client)->OpenStream();
  ASSERT_TRUE(sid.ok());
  constexpr size_t kTotal = 10 << 20;
  auto payload = std::make_shared<std::vector<uint8_t>>(kTotal);
  for (size_t i = 0; i < kTotal; ++i) (*payload)[i] = uint8_t(i * 7 + (i >> 13));
  ASSERT_TRUE((*client)->Send(*sid, payload, true).ok());
  ASSERT_TRUE(pair.RunUntil([&] { return client_events.fin[*sid]; }, 60 * kSecond))
      << "echoed " << client_events.data[*sid].size() << " of " << kTotal;
  EXPECT_TRUE(client_events.data[*sid] == *payload);
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
