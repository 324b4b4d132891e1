// The server endpoint over the deterministic in-process link: Retry and its tokens,
// Version Negotiation, stateless resets, the amplification limit, connection and handshake
// caps, garbage and hostile headers as counted drops, which connections it writes, and
// reaping closed ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>

#include "tests/unit/quic/quic_fixture.h"

namespace qbridge::quic {
namespace {

TEST_F(QuicTest, RetryValidatesTheClientAddress) {
  endpoint_config_.retry = RetryMode::kAlways;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  EXPECT_EQ(endpoint_->stats().retry_sent, 1u);
  EXPECT_EQ(endpoint_->stats().accepted, 1u);
}

TEST_F(QuicTest, RetryTokenFromAnotherAddressIsRefused) {
  endpoint_config_.retry = RetryMode::kAlways;
  QuicSim sim;
  Start(sim);
  // Capture the client's second Initial (the one carrying the token) and replay it
  // from another address instead of delivering it.
  std::vector<uint8_t> with_token;
  int initials = 0;
  sim.filter = [&](QuicSim::Side s, std::vector<uint8_t>& d) {
    if (s != QuicSim::Side::kToServer || (d[0] & 0xF0) != 0xC0) return true;
    if (++initials == 2) {
      with_token = d;
      return false;
    }
    return true;
  };
  sim.RunUntil([&] { return !with_token.empty(); }, 2 * kSecond);
  ASSERT_FALSE(with_token.empty());
  sim.InjectToServer(with_token, quic::Address::FromIpPort("198.18.0.99", 50000));
  EXPECT_EQ(endpoint_->stats().drop_bad_token, 1u);
  EXPECT_EQ(endpoint_->stats().accepted, 0u);
}

TEST_F(QuicTest, UnknownVersionGetsVersionNegotiation) {
  QuicSim sim;
  Start(sim);
  std::vector<uint8_t> pkt = {0xC0, 0x1A, 0x2A, 0x3A, 0x4A, 8, 1, 2, 3, 4, 5, 6, 7, 8,
                              4,    9,    9,    9,    9};
  pkt.resize(1200, 0);
  const auto from = quic::Address::FromIpPort("198.18.0.7", 4000);
  sim.InjectToServer(pkt, from);
  EXPECT_EQ(endpoint_->stats().version_negotiation_sent, 1u);
  sim.RunUntil([&] { return !sim.client_inbox_raw.empty(); }, kSecond);
  ASSERT_EQ(sim.client_inbox_raw.size(), 1u);
  const auto& vn = sim.client_inbox_raw[0];
  ASSERT_GE(vn.size(), 7u + 4 + 8 + 4);
  EXPECT_EQ(vn[0] & 0x80, 0x80);
  EXPECT_EQ(vn[1] | vn[2] | vn[3] | vn[4], 0);  // version 0 = Version Negotiation
  EXPECT_EQ(vn[5], 4);                          // our DCID = their SCID
  // The supported-versions list ends with QUIC v1.
  EXPECT_EQ(std::vector<uint8_t>(vn.end() - 4, vn.end()), (std::vector<uint8_t>{0, 0, 0, 1}));
}

TEST_F(QuicTest, StatelessResetAfterServerLosesState) {
  endpoint_config_.secret.assign(32, 0x5A);  // survives the "restart"
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  // The server restarts: same secret, no connections.
  server_conn_ = nullptr;
  auto ep = ServerEndpoint::Create(*server_tls_, endpoint_config_);
  ASSERT_TRUE(ep.ok());
  endpoint_ = std::move(*ep);
  sim.server = endpoint_.get();
  auto sid = client_->OpenStream();
  ASSERT_TRUE(sid.ok());
  ASSERT_TRUE(client_->Send(*sid, Bytes(200, 1)).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return client_->state() == Connection::State::kDraining ||
                                        client_->state() == Connection::State::kClosed; },
                           5 * kSecond));
  EXPECT_GE(endpoint_->stats().stateless_reset_sent, 1u);
  EXPECT_TRUE(client_->peer_closed());
}

TEST_F(QuicTest, OnlyAVerifiedRetryTokenLiftsTheAmplificationLimit) {
  // A client (or an attacker spoofing a victim's address) puts junk in the token field
  // and never answers. The server must still send at most 3x what it received (RFC 9000
  // 8.1), retransmissions included.
  endpoint_config_.retry = RetryMode::kOff;
  client_transport_.token = std::vector<uint8_t>(24, 0x42);
  QuicSim sim;
  Start(sim);
  uint64_t to_server = 0, to_client = 0;
  sim.filter = [&](QuicSim::Side side, std::vector<uint8_t>& d) {
    if (side == QuicSim::Side::kToServer) {
      if (to_server > 0) return false;  // the "client" sends its first datagram only
      to_server += d.size();
    } else {
      to_client += d.size();
    }
    return true;
  };
  sim.RunUntil([] { return false; }, 20 * kSecond);
  EXPECT_EQ(endpoint_->stats().accepted, 1u);
  EXPECT_GT(to_client, 0u);
  EXPECT_LE(to_client, 3 * to_server);
}

TEST_F(QuicTest, ConnectionCapDropsNewClients) {
  endpoint_config_.max_connections = 1;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  // A second client on another port.
  Recorder second_events;
  auto second = Connection::Connect(*client_tls_, client_transport_,
                                    Path{quic::Address::FromIpPort("198.18.0.1", 50001),
                                         quic::Address::FromIpPort("198.18.0.2", 14567)},
                                    &second_events, sim.now());
  ASSERT_TRUE(second.ok());
  std::vector<uint8_t> scratch(64 * 1500);
  (*second)->Write(sim.now(), scratch, 64, [&](const Path& p, std::span<const uint8_t> d, size_t) {
    endpoint_->Receive(Path{p.remote, p.local}, d, sim.now(), [](const Path&, auto, size_t) {});
  });
  EXPECT_EQ(endpoint_->stats().drop_connection_limit, 1u);
  EXPECT_EQ(endpoint_->connections(), 1u);
}

TEST_F(QuicTest, GarbageIsCountedNotFatal) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  std::mt19937 rng(3);
  const auto from = quic::Address::FromIpPort("198.18.0.66", 1234);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> junk(rng() % 1400);
    for (auto& b : junk) b = uint8_t(rng());
    if (!junk.empty() && i % 3 == 0) junk[0] |= 0xC0;  // long-header looking
    sim.InjectToServer(junk, from);
  }
  const auto& st = endpoint_->stats();
  EXPECT_EQ(st.accepted, 1u);
  EXPECT_GT(st.drop_bad_header + st.drop_not_initial + st.drop_short_unknown +
                st.version_negotiation_sent,
            0u);
  // The real connection is unharmed.
  auto sid = client_->OpenStream();
  ASSERT_TRUE(client_->Send(*sid, Bytes(10, 1), true).ok());
  EXPECT_TRUE(sim.RunUntil([&] { return server_events_.fin[*sid]; }, 5 * kSecond));
}

TEST_F(QuicTest, HeadersThatMadeNgtcp2AssertAreCountedDrops) {
  // Found by quic_endpoint_fuzz: ngtcp2 asserts (and Debian keeps asserts) on an empty
  // datagram and on a CID longer than 20 bytes reaching ngtcp2_cid_init.
  QuicSim sim;
  Start(sim);
  const auto from = quic::Address::FromIpPort("198.18.0.66", 1234);
  sim.InjectToServer({}, from);
  // (Sized first, then filled: GCC 12 warns falsely on resize after an initializer list.)
  std::vector<uint8_t> vn_long_cid(6 + 40 + 1 + 60, 0xAB);  // long header, version 0
  const uint8_t vn_head[] = {0x80, 0, 0, 0, 0, 40};
  std::copy(std::begin(vn_head), std::end(vn_head), vn_long_cid.begin());
  vn_long_cid[6 + 40] = 0;  // SCID length
  sim.InjectToServer(vn_long_cid, from);
  std::vector<uint8_t> v1_long_cid(1200, 0);  // v1 Initial, 40-byte DCID
  const uint8_t v1_head[] = {0xC0, 0, 0, 0, 1, 40};
  std::copy(std::begin(v1_head), std::end(v1_head), v1_long_cid.begin());
  sim.InjectToServer(v1_long_cid, from);
  EXPECT_EQ(endpoint_->stats().drop_bad_header, 3u);
  EXPECT_EQ(endpoint_->stats().accepted, 0u);
}

TEST_F(QuicTest, InitialFloodIsBoundedAndCounted) {
  // 600 clients start handshakes at once. Past 50 in flight the endpoint demands Retry
  // (no state kept for those); past 100 it would drop. Memory stays bounded by the caps.
  endpoint_config_.retry = RetryMode::kUnderLoad;
  endpoint_config_.retry_threshold = 50;
  endpoint_config_.max_handshakes = 100;
  QuicSim sim;
  Start(sim);
  qbridge::testing::FireInitials(*endpoint_, *client_tls_, client_transport_, 600, "198.18.1.1",
                                 20000, sim.now());
  const auto& st = endpoint_->stats();
  EXPECT_EQ(st.accepted, 50u);
  EXPECT_EQ(st.retry_sent, 550u);
  EXPECT_EQ(endpoint_->connections(), 50u);
  EXPECT_EQ(endpoint_->handshakes(), 50u);
  // Retry off: the handshake cap drops the excess instead.
  endpoint_config_.retry = RetryMode::kOff;
  auto ep = ServerEndpoint::Create(*server_tls_, endpoint_config_);
  ASSERT_TRUE(ep.ok());
  qbridge::testing::FireInitials(**ep, *client_tls_, client_transport_, 300, "198.18.2.1", 30000,
                                 sim.now());
  EXPECT_EQ((*ep)->connections(), 100u);
  EXPECT_EQ((*ep)->stats().drop_handshake_limit, 200u);
  EXPECT_EQ((*ep)->handshakes(), 100u);
}

// The endpoint writes only connections with something to send: after a round of writes the
// idle ones drop out, a datagram or queued data brings one back, and its timers still fire
// from the endpoint's deadline table.
TEST_F(QuicTest, EndpointWritesOnlyConnectionsThatWantTo) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  Connection* const first = server_conn_;
  qbridge::testing::FireInitials(*endpoint_, *client_tls_, client_transport_, 20, "198.18.1.1", 20000, sim.now());
  server_conn_ = first;  // on_accept pointed the fixture at the newest one
  server_events_.conn = first;
  EXPECT_EQ(endpoint_->connections(), 21u);
  EXPECT_EQ(endpoint_->handshakes(), 20u);  // the first one finished its handshake
  EXPECT_EQ(endpoint_->connections_wanting_write(), 20u);  // the new ones owe their answers
  std::vector<uint8_t> scratch(64 * 1500);
  size_t written = 0;
  auto count = [&](const Path&, std::span<const uint8_t> d, size_t seg) { written += (d.size() + seg - 1) / seg; };
  endpoint_->WriteAll(sim.now(), scratch, 64, count);
  EXPECT_GE(written, 20u);
  EXPECT_EQ(endpoint_->connections_wanting_write(), 0u);  // all said what they had to say
  written = 0;
  endpoint_->WriteAll(sim.now(), scratch, 64, count);
  EXPECT_EQ(written, 0u);
  // Data queued on the handshaken connection makes it want to write, and only it.
  server_events_.echo = true;
  auto sid = client_->OpenStream();
  ASSERT_TRUE(sid.ok());
  ASSERT_TRUE(client_->Send(*sid, Buffer::Copy(std::vector<uint8_t>(3000, 7)), true).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return client_events_.fin[*sid]; }, 5 * kSecond));
  EXPECT_EQ(client_events_.data[*sid].size(), 3000u);
  // The 20 half-open connections time out by their handshake deadline: the table fires it.
  ASSERT_TRUE(sim.RunUntil([&] { return endpoint_->connections() == 1; }, 30 * kSecond));
  EXPECT_EQ(endpoint_->handshakes(), 0u);  // reaped mid-handshake: counted out
  EXPECT_LT(endpoint_->Expiry(), kNever);  // the live one keeps its idle deadline
}

TEST_F(QuicTest, RetryAboveAHandshakeRate) {
  endpoint_config_.retry = RetryMode::kUnderLoad;
  endpoint_config_.retry_threshold = 1000;
  endpoint_config_.retry_rate = 10;
  QuicSim sim;
  Start(sim);
  auto burst = [&](int n, uint16_t base) {
    qbridge::testing::FireInitials(*endpoint_, *client_tls_, client_transport_, n, "198.18.3.1",
                                   base, sim.now());
  };
  burst(15, 40000);
  EXPECT_EQ(endpoint_->stats().accepted, 10u);
  EXPECT_EQ(endpoint_->stats().retry_sent, 5u);
  sim.Advance(kSecond);  // a new second: the rate allows 10 more
  burst(3, 41000);
  EXPECT_EQ(endpoint_->stats().accepted, 13u);
  EXPECT_EQ(endpoint_->stats().retry_sent, 5u);
}

TEST_F(QuicTest, ClosedConnectionsAreReapedAfterTheDrainingPeriod) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  client_->Close(0);
  // The server drains for 3 PTO, then the endpoint forgets the connection by itself:
  // no other connection's timer is needed to reap it.
  ASSERT_TRUE(sim.RunUntil([&] { return endpoint_->connections() == 0; }, 5 * kSecond));
  EXPECT_EQ(endpoint_->stats().closed, 1u);
}

}  // namespace
}  // namespace qbridge::quic
