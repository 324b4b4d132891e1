// QUIC connections over the deterministic in-process link: real ngtcp2 + GnuTLS handshakes
// with certificate checks, streams and their scheduler, loss, timers, resumption and 0-RTT,
// migration. No kernel and no real time. The server endpoint's own duties are in
// endpoint_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>

#include "tests/unit/quic/quic_fixture.h"

namespace qbridge::quic {
namespace {

TEST_F(QuicTest, HandshakeVerifiesCertificateAndNegotiatesMqtt) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  EXPECT_EQ(client_->alpn(), "mqtt");
  EXPECT_EQ(server_conn_->alpn(), "mqtt");
  EXPECT_EQ(client_->state(), Connection::State::kEstablished);
  EXPECT_EQ(endpoint_->stats().accepted, 1u);
  EXPECT_EQ(endpoint_->connections(), 1u);
  // The server's CIDs carry its owner id.
  const ngtcp2_cid* dcid = ngtcp2_conn_get_dcid(client_->raw());
  EXPECT_EQ(dcid->datalen, kServerCidLen);
  EXPECT_EQ(CidOwner(dcid->data, dcid->datalen), endpoint_config_.owner_id);
}

TEST_F(QuicTest, ServerCidsEncodeTheOwner) {
  endpoint_config_.owner_id = 0x0203;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  const ngtcp2_cid* dcid = ngtcp2_conn_get_dcid(client_->raw());
  EXPECT_EQ(CidOwner(dcid->data, dcid->datalen), 0x0203);
}

TEST_F(QuicTest, IpLiteralIsVerifiedAgainstIpSan) {
  client_tls_config_.server_name = "198.18.0.2";
  QuicSim sim;
  Start(sim);
  EXPECT_TRUE(Handshake(sim));
}

TEST_F(QuicTest, UntrustedCaFailsTheHandshake) {
  client_tls_config_.cacertfile = GetTestCerts().other_ca;
  QuicSim sim;
  Start(sim);
  EXPECT_FALSE(Handshake(sim));
  EXPECT_FALSE(client_events_.confirmed);
  EXPECT_NE(client_->state(), Connection::State::kEstablished);
  EXPECT_NE(client_->tls_alert(), 0);  // bad_certificate / unknown_ca went to the server
}

TEST_F(QuicTest, WrongNameFailsTheHandshake) {
  client_tls_config_.server_name = "broker.example.com";
  QuicSim sim;
  Start(sim);
  EXPECT_FALSE(Handshake(sim));
  EXPECT_FALSE(client_events_.confirmed);
}

TEST_F(QuicTest, InsecureIsAnExplicitOptOut) {
  TlsConfig c;
  c.verify_peer = false;
  EXPECT_FALSE(TlsContext::Create(TlsContext::Side::kClient, c).ok());
  c.insecure = true;
  EXPECT_TRUE(TlsContext::Create(TlsContext::Side::kClient, c).ok());
  TlsConfig v;  // verifying without a name to check
  EXPECT_FALSE(TlsContext::Create(TlsContext::Side::kClient, v).ok());
}

TEST_F(QuicTest, InsecureClientConnectsToUntrustedServer) {
  client_tls_config_.cacertfile = GetTestCerts().other_ca;
  client_tls_config_.verify_peer = false;
  client_tls_config_.insecure = true;
  QuicSim sim;
  Start(sim);
  EXPECT_TRUE(Handshake(sim));
}

TEST_F(QuicTest, AlpnMismatchFailsTheHandshake) {
  client_tls_config_.alpn = {"h3"};
  QuicSim sim;
  Start(sim);
  EXPECT_FALSE(Handshake(sim));
}

TEST_F(QuicTest, MutualTls) {
  server_tls_config_.verify_peer = true;
  server_tls_config_.cacertfile = GetTestCerts().ca;
  {
    QuicSim sim;  // no client certificate: refused
    Start(sim);
    EXPECT_FALSE(Handshake(sim));
  }
  client_tls_config_.certfile = GetTestCerts().client_cert;
  client_tls_config_.keyfile = GetTestCerts().client_key;
  client_events_ = Recorder{};
  server_events_ = Recorder{};
  server_conn_ = nullptr;
  QuicSim sim;
  Start(sim);
  EXPECT_TRUE(Handshake(sim));
}

class QuicCcTest : public QuicTest, public ::testing::WithParamInterface<CcAlgo> {};

TEST_P(QuicCcTest, EchoOverALossyReorderingLink) {
  client_transport_.cc = GetParam();
  endpoint_config_.transport.cc = GetParam();
  LinkConfig link;
  link.loss = 0.03;
  link.duplicate = 0.01;
  link.jitter_ns = 4 * kMillisecond;
  link.seed = 42;
  QuicSim sim(link);
  Start(sim);
  server_events_.echo = true;
  ASSERT_TRUE(Handshake(sim));
  auto sid = client_->OpenStream();
  ASSERT_TRUE(sid.ok());
  constexpr size_t kTotal = 2 << 20;
  std::vector<uint8_t> expected;
  for (size_t off = 0; off < kTotal; off += 64 << 10) {
    Buffer b = Bytes(64 << 10, uint8_t(off >> 16));
    expected.insert(expected.end(), b.begin(), b.end());
    ASSERT_TRUE(client_->Send(*sid, b, off + (64 << 10) >= kTotal).ok());
  }
  ASSERT_TRUE(sim.RunUntil([&] { return client_events_.fin[*sid]; }, 60 * kSecond));
  EXPECT_EQ(client_events_.data[*sid], expected);
  EXPECT_EQ(server_events_.data[*sid].size(), kTotal);
  // Everything was acknowledged, so nothing is held for retransmission any more.
  EXPECT_TRUE(sim.RunUntil([&] { return client_->BufferedBytes(*sid) == 0; }, 5 * kSecond));
}

INSTANTIATE_TEST_SUITE_P(Cc, QuicCcTest,
                         ::testing::Values(CcAlgo::kCubic, CcAlgo::kBbr, CcAlgo::kReno));

// Small packets appended to a stream share buffers (one queue entry for many), keep their
// bytes in place while ngtcp2 may still send them again, and arrive whole and in order
// over a lossy, reordering link. A buffer somebody else holds is never grown, and a fill
// that fails queues nothing.
TEST_F(QuicTest, AppendedPacketsShareBuffersAndArriveInOrderOverALossyLink) {
  LinkConfig link;
  link.loss = 0.03;
  link.jitter_ns = 4 * kMillisecond;
  link.seed = 7;
  QuicSim sim(link);
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  auto sid = client_->OpenStream();
  ASSERT_TRUE(sid.ok());
  BufferPool pool;
  std::vector<uint8_t> expected;
  constexpr size_t kPackets = 20000;
  size_t appended = 0, failures = 0;
  auto append_some = [&] {  // 50 packets of 1-300 bytes between two steps of the link
    for (int i = 0; i < 50 && appended < kPackets; ++i, ++appended) {
      const size_t n = 1 + (appended * 37) % 300;
      const uint8_t v = uint8_t(appended);
      const absl::Status st = client_->Append(*sid, n, pool, [&](std::span<uint8_t> out) {
        std::fill(out.begin(), out.end(), v);
        return out.size() == n;
      });
      failures += !st.ok();
      expected.insert(expected.end(), n, v);
    }
  };
  ASSERT_TRUE(sim.RunUntil(
      [&] {
        append_some();
        return appended == kPackets && server_events_.data[*sid].size() >= expected.size();
      },
      120 * kSecond));
  EXPECT_EQ(failures, 0u);
  EXPECT_TRUE(server_events_.data[*sid] == expected);
  EXPECT_TRUE(sim.RunUntil([&] { return client_->BufferedBytes(*sid) == 0; }, 10 * kSecond));
  const BufferPool::Stats st = pool.stats();
  EXPECT_LT(st.allocated + st.reused, kPackets / 10) << "packets did not share buffers";
  EXPECT_EQ(st.outstanding, 0u);  // all acknowledged, all back

  // A buffer the caller still holds is not grown; a failed fill queues nothing.
  Buffer kept = pool.Get(10);
  std::fill(kept.mutable_span().begin(), kept.mutable_span().end(), uint8_t(1));
  ASSERT_TRUE(client_->Send(*sid, kept).ok());
  ASSERT_TRUE(client_->Append(*sid, 5, pool, [](std::span<uint8_t> out) {
                std::fill(out.begin(), out.end(), uint8_t(2));
                return true;
              }).ok());
  EXPECT_EQ(kept.size(), 10u);
  EXPECT_EQ(client_->BufferedBytes(*sid), 15u);
  EXPECT_EQ(client_->Append(*sid, 7, pool, [](std::span<uint8_t>) { return false; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->BufferedBytes(*sid), 15u);
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.data[*sid].size() == expected.size() + 15; },
                           10 * kSecond));
  EXPECT_EQ(server_events_.data[*sid][expected.size()], 1);
  EXPECT_EQ(server_events_.data[*sid].back(), 2);
}

TEST_F(QuicTest, ControlStreamIsServedBeforeData) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  auto control = client_->OpenStream();
  auto data = client_->OpenStream(/*priority=*/0);
  ASSERT_TRUE(control.ok() && data.ok());
  ASSERT_EQ(*control, 0);
  // Saturate the data stream first.
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(client_->Send(*data, Bytes(64 << 10, uint8_t(i))).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.data[*data].size() > (256 << 10); },
                           10 * kSecond));
  // A control packet queued behind 2 MiB of data leaves in the very next write: the
  // server sees it before any data-stream byte written after it was queued.
  const uint64_t data_sent_when_queued = client_->SentBytes(*data);
  ASSERT_TRUE(client_->Send(*control, Bytes(2, 0xC0)).ok());  // a PINGREQ's size
  ASSERT_TRUE(sim.RunUntil([&] { return !server_events_.data[*control].empty(); }, 10 * kSecond));
  EXPECT_LE(server_events_.others_at_first_byte[*control], data_sent_when_queued);
  EXPECT_GT(data_sent_when_queued, 0u);
  EXPECT_EQ(client_->SentBytes(*control), 2u);
}

TEST_F(QuicTest, DataStreamsByPriority) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  ASSERT_TRUE(client_->OpenStream().ok());  // control, idle
  auto low = client_->OpenStream(/*priority=*/5);
  auto high = client_->OpenStream(/*priority=*/1);
  ASSERT_TRUE(low.ok() && high.ok());
  ASSERT_TRUE(client_->Send(*low, Bytes(256 << 10, 1), true).ok());
  ASSERT_TRUE(client_->Send(*high, Bytes(256 << 10, 2), true).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.fin[*low] && server_events_.fin[*high]; },
                           20 * kSecond));
  // The high-priority stream finished first: its last delivery precedes the low one's.
  const auto& order = server_events_.order;
  const auto last_high = std::find(order.rbegin(), order.rend(), *high);
  const auto last_low = std::find(order.rbegin(), order.rend(), *low);
  EXPECT_GT(std::distance(order.rbegin(), last_high), std::distance(order.rbegin(), last_low));
}

TEST_F(QuicTest, PeerStreamCreditIsRespected) {
  endpoint_config_.transport.max_peer_bidi_streams = 2;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  auto a = client_->OpenStream();
  auto b = client_->OpenStream();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(client_->OpenStream().status().code(), absl::StatusCode::kUnavailable);
  // Finishing stream b in both directions returns its credit.
  server_events_.echo = true;
  ASSERT_TRUE(client_->Send(*b, Bytes(10, 1), true).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return client_->StreamCredit() > 0; }, 5 * kSecond));
  EXPECT_GT(client_events_.credit_events, 0);
  EXPECT_TRUE(client_->OpenStream().ok());
}

TEST_F(QuicTest, StreamResetIsSurfaced) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  auto sid = client_->OpenStream();
  ASSERT_TRUE(client_->Send(*sid, Bytes(100, 1)).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return !server_events_.data[*sid].empty(); }, 5 * kSecond));
  client_->ResetStream(*sid, 0x8E);
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.reset.count(*sid) > 0; }, 5 * kSecond));
  EXPECT_EQ(server_events_.reset[*sid], 0x8Eu);
}

TEST_F(QuicTest, IdleTimeoutClosesBothSides) {
  client_transport_.idle_timeout_ns = 3 * kSecond;
  endpoint_config_.transport.idle_timeout_ns = 3 * kSecond;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  const Timestamp start = sim.now();
  ASSERT_TRUE(sim.RunUntil(
      [&] { return client_->state() == Connection::State::kClosed && endpoint_->connections() == 0; },
      30 * kSecond));
  EXPECT_GE(sim.now() - start, 3 * kSecond);
  EXPECT_EQ(endpoint_->stats().closed, 1u);
  EXPECT_STREQ(client_->timeout_reason(), "idle timeout");
}

TEST_F(QuicTest, DisconnectTimeoutDropsADeadPath) {
  client_transport_.disconnect_timeout_ns = 2 * kSecond;  // quic_discon_timeout
  client_transport_.idle_timeout_ns = 60 * kSecond;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  // The path dies: nothing reaches the client any more, while it has data to send.
  sim.filter = [](QuicSim::Side s, std::vector<uint8_t>&) { return s != QuicSim::Side::kToClient; };
  auto sid = client_->OpenStream();
  ASSERT_TRUE(client_->Send(*sid, Bytes(4000, 1)).ok());
  const Timestamp start = sim.now();
  ASSERT_TRUE(sim.RunUntil([&] { return client_->state() == Connection::State::kClosed; },
                           30 * kSecond));
  EXPECT_STREQ(client_->timeout_reason(), "disconnect timeout");
  EXPECT_GE(sim.now() - start, 2 * kSecond);
  EXPECT_LT(sim.now() - start, 10 * kSecond);  // long before the 60 s idle timeout
}

TEST_F(QuicTest, DisconnectTimeoutSparesAQuietHealthyConnection) {
  client_transport_.disconnect_timeout_ns = 1 * kSecond;
  client_transport_.idle_timeout_ns = 30 * kSecond;
  client_transport_.keepalive_ns = 2 * kSecond;
  endpoint_config_.transport.idle_timeout_ns = 30 * kSecond;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  sim.RunUntil([] { return false; }, 20 * kSecond);  // PINGs answered, nothing else
  EXPECT_EQ(client_->state(), Connection::State::kEstablished);
}

TEST_F(QuicTest, KeepalivePingsHoldAnIdleConnection) {
  client_transport_.idle_timeout_ns = 3 * kSecond;
  client_transport_.keepalive_ns = 1 * kSecond;
  endpoint_config_.transport.idle_timeout_ns = 3 * kSecond;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  sim.RunUntil([] { return false; }, 20 * kSecond);
  EXPECT_EQ(client_->state(), Connection::State::kEstablished);
  EXPECT_EQ(endpoint_->connections(), 1u);
}

TEST_F(QuicTest, HandshakeTimeout) {
  client_transport_.handshake_timeout_ns = 2 * kSecond;
  QuicSim sim;
  Start(sim);
  sim.filter = [](QuicSim::Side s, std::vector<uint8_t>&) { return s != QuicSim::Side::kToClient; };
  EXPECT_TRUE(sim.RunUntil([&] { return client_->state() == Connection::State::kClosed; },
                           10 * kSecond));
  EXPECT_FALSE(client_events_.confirmed);
}

TEST_F(QuicTest, KeyUpdateKeepsTheConnection) {
  QuicSim sim;
  Start(sim);
  EchoAround(sim, [&] { ASSERT_TRUE(client_->UpdateKeys(sim.now()).ok()); });
}

// A server frees its TLS session once the handshake is over (12 KiB per idle session): what
// was asked of it stays answerable, and key updates either way still work without it.
TEST_F(QuicTest, ServerReleasesItsTlsSessionAfterTheHandshake) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  ASSERT_TRUE(server_conn_);
  EXPECT_FALSE(server_conn_->holds_tls());
  EXPECT_TRUE(client_->holds_tls());  // a client still takes session tickets
  EXPECT_EQ(server_conn_->alpn(), "mqtt");
  EXPECT_FALSE(server_conn_->resumed());
  EchoAround(sim, [&] { ASSERT_TRUE(server_conn_->UpdateKeys(sim.now()).ok()); });
}

TEST_F(QuicTest, ResumptionCarriesEarlyData) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  ASSERT_TRUE(sim.RunUntil([&] { return client_->ticket().has_value(); }, 5 * kSecond));
  const ResumptionTicket ticket = *client_->ticket();
  EXPECT_FALSE(ticket.tls_session.empty());
  EXPECT_FALSE(ticket.transport_params.empty());
  client_->Close(0);
  sim.RunUntil([&] { return endpoint_->connections() == 0; }, 10 * kSecond);

  // Reconnect with the ticket: CONNECT-sized data leaves before the handshake is done.
  Recorder early_events;
  auto again = Connection::Connect(*client_tls_, client_transport_, sim.ClientPath(),
                                   &early_events, sim.now(), &ticket);
  ASSERT_TRUE(again.ok());
  Connection& c = **again;
  early_events.conn = &c;
  sim.client = &c;
  server_events_ = Recorder{};
  ASSERT_TRUE(c.early_data_possible());
  auto sid = c.OpenStream();
  ASSERT_TRUE(sid.ok()) << sid.status();
  ASSERT_TRUE(c.Send(*sid, Bytes(300, 9), true).ok());
  bool data_before_confirmed = false;
  ASSERT_TRUE(sim.RunUntil(
      [&] {
        if (server_events_.fin[*sid] && !early_events.confirmed) data_before_confirmed = true;
        return server_events_.fin[*sid] && early_events.confirmed;
      },
      5 * kSecond));
  EXPECT_TRUE(c.resumed());
  EXPECT_TRUE(c.early_data_accepted());
  EXPECT_FALSE(c.early_data_rejected());
  EXPECT_TRUE(data_before_confirmed);  // the server had it a round trip early
  ASSERT_TRUE(server_conn_);
  EXPECT_TRUE(server_conn_->early_data_accepted());  // kept from the released session
  EXPECT_TRUE(server_conn_->resumed());
  {
    const Buffer want = Bytes(300, 9);
    EXPECT_EQ(server_events_.data[*sid], std::vector<uint8_t>(want.begin(), want.end()));
  }
}

TEST_F(QuicTest, ReplayedEarlyDataIsRefused) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  ASSERT_TRUE(sim.RunUntil([&] { return client_->ticket().has_value(); }, 5 * kSecond));
  const ResumptionTicket ticket = *client_->ticket();
  // Resume with early data and record the client's first flight.
  std::vector<std::vector<uint8_t>> first_flight;
  sim.filter = [&](QuicSim::Side side, std::vector<uint8_t>& d) {
    if (side == QuicSim::Side::kToServer && first_flight.size() < 2) first_flight.push_back(d);
    return true;
  };
  Recorder early_events;
  auto again = Connection::Connect(*client_tls_, client_transport_, sim.ClientPath(),
                                   &early_events, sim.now(), &ticket);
  ASSERT_TRUE(again.ok());
  sim.client = again->get();
  auto sid = (*again)->OpenStream();
  ASSERT_TRUE((*again)->Send(*sid, Bytes(50, 3), true).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return early_events.confirmed; }, 5 * kSecond));
  ASSERT_TRUE((*again)->early_data_accepted());
  // An attacker replays that flight to a second endpoint of the same server (same
  // ticket key, same anti-replay state): it may complete nothing, and must not get the
  // early data accepted a second time.
  auto twin = ServerEndpoint::Create(*server_tls_, endpoint_config_);
  ASSERT_TRUE(twin.ok());
  Recorder replayed;
  Connection* replay_conn = nullptr;
  bool accepted_any = false, replay_seen = false;
  (*twin)->set_on_accept([&](Connection& c) {
    replay_conn = &c;
    replay_seen = true;
    replayed.conn = &c;
    return &replayed;
  });
  (*twin)->set_on_close([&](Connection& c) {  // the endpoint may drop it at once
    accepted_any |= c.early_data_accepted();
    replay_conn = nullptr;
    replayed.conn = nullptr;
  });
  for (const auto& d : first_flight)
    (*twin)->Receive(sim.ServerPath(), d, sim.now(), [](const Path&, auto, size_t) {});
  ASSERT_TRUE(replay_seen);
  if (replay_conn) accepted_any |= replay_conn->early_data_accepted();
  EXPECT_FALSE(accepted_any);
  EXPECT_TRUE(replayed.data.empty());
}

TEST_F(QuicTest, EarlyDataRejectedByAnotherServerIsReported) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  ASSERT_TRUE(sim.RunUntil([&] { return client_->ticket().has_value(); }, 5 * kSecond));
  const ResumptionTicket ticket = *client_->ticket();
  // A different server instance (another ticket key) cannot resume this ticket.
  auto other_tls = TlsContext::Create(TlsContext::Side::kServer, server_tls_config_);
  ASSERT_TRUE(other_tls.ok());
  auto other = ServerEndpoint::Create(**other_tls, endpoint_config_);
  ASSERT_TRUE(other.ok());
  Recorder server2;
  (*other)->set_on_accept([&](Connection& conn) {
    server2.conn = &conn;
    return &server2;
  });
  sim.server = other->get();
  Recorder early_events;
  auto again = Connection::Connect(*client_tls_, client_transport_, sim.ClientPath(),
                                   &early_events, sim.now(), &ticket);
  ASSERT_TRUE(again.ok());
  sim.client = again->get();
  auto sid = (*again)->OpenStream();
  ASSERT_TRUE(sid.ok());
  ASSERT_TRUE((*again)->Send(*sid, Bytes(100, 1), true).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return early_events.confirmed; }, 5 * kSecond));
  EXPECT_FALSE((*again)->resumed());
  EXPECT_TRUE((*again)->early_data_rejected());
  EXPECT_TRUE(server2.data.empty());  // nothing of the rejected early data arrived
  // The owner sends again over the full handshake.
  auto sid2 = (*again)->OpenStream();
  ASSERT_TRUE(sid2.ok());
  ASSERT_TRUE((*again)->Send(*sid2, Bytes(100, 1), true).ok());
  EXPECT_TRUE(sim.RunUntil([&] { return server2.fin[*sid2]; }, 5 * kSecond));
}

TEST_F(QuicTest, PmtudRaisesTheDatagramSize) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  auto sid = client_->OpenStream();
  ASSERT_TRUE(client_->Send(*sid, Bytes(512 << 10, 1), true).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.fin[*sid]; }, 10 * kSecond));
  // 1200 bytes until a probe is acknowledged; the link carries up to 1500.
  EXPECT_GT(ngtcp2_conn_get_path_max_tx_udp_payload_size(client_->raw()), 1400u);
}

TEST_F(QuicTest, ReceiveCreditFollowsConsumption) {
  endpoint_config_.transport.manual_flow_control = true;
  endpoint_config_.transport.stream_window = 256 << 10;
  endpoint_config_.transport.max_stream_window = 256 << 10;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  auto sid = client_->OpenStream();
  ASSERT_TRUE(client_->Send(*sid, Bytes(1 << 20, 4), true).ok());
  // Nothing consumed: the sender stops at the window.
  sim.RunUntil([] { return false; }, 2 * kSecond);
  EXPECT_EQ(server_events_.data[*sid].size(), 256u << 10);
  EXPECT_FALSE(server_events_.fin[*sid]);
  // The application consumes as it goes: the rest flows.
  uint64_t consumed = 0;
  ASSERT_TRUE(sim.RunUntil(
      [&] {
        const uint64_t have = server_events_.data[*sid].size();
        if (have > consumed) {
          server_conn_->Consume(*sid, have - consumed);
          consumed = have;
        }
        return server_events_.fin[*sid];
      },
      10 * kSecond));
  EXPECT_EQ(server_events_.data[*sid].size(), 1u << 20);
}

// HoldCredit: the held stream stops at its window while another stream of the same
// connection flows on; ReleaseCredit returns what was withheld and the rest comes.
TEST_F(QuicTest, HeldStreamCreditStopsThatStreamOnly) {
  endpoint_config_.transport.stream_window = 256 << 10;
  endpoint_config_.transport.max_stream_window = 256 << 10;
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  auto held = client_->OpenStream();
  auto other = client_->OpenStream();
  ASSERT_TRUE(held.ok() && other.ok());
  ASSERT_TRUE(client_->Send(*held, Bytes(16 << 10, 1)).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.data[*held].size() == 16u << 10; }, 2 * kSecond));
  EXPECT_TRUE(server_conn_->HoldCredit(*held));
  EXPECT_FALSE(server_conn_->HoldCredit(*held)) << "held twice";
  EXPECT_TRUE(server_conn_->CreditHeld(*held));
  ASSERT_TRUE(client_->Send(*held, Bytes(1 << 20, 2), true).ok());
  ASSERT_TRUE(client_->Send(*other, Bytes(1 << 20, 3), true).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.fin[*other]; }, 10 * kSecond));
  sim.RunUntil([] { return false; }, 1 * kSecond);
  // Only what the window already allowed when it was held: 16 KiB + 256 KiB at most.
  EXPECT_LE(server_events_.data[*held].size(), (16u << 10) + (256u << 10));
  EXPECT_FALSE(server_events_.fin[*held]);
  server_conn_->ReleaseCredit(*held);
  EXPECT_FALSE(server_conn_->CreditHeld(*held));
  ASSERT_TRUE(sim.RunUntil([&] { return server_events_.fin[*held]; }, 10 * kSecond));
  EXPECT_EQ(server_events_.data[*held].size(), (16u << 10) + (1u << 20));
}

TEST_F(QuicTest, ServerAcceptsAnIpLiteralInSni) {
  // NanoMQ puts the broker's IP address in SNI, which RFC 6066 does not allow.
  client_tls_config_.server_name = "198.18.0.2";
  client_tls_config_.sni = "198.18.0.2";
  QuicSim sim;
  Start(sim);
  EXPECT_TRUE(Handshake(sim));
}


TEST_F(QuicTest, SendOnAStreamTheClientNeverOpenedIsRefused) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  EXPECT_EQ(server_conn_->Send(8, Bytes(10, 1)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(server_conn_->BufferedBytes(8), 0u);
}

TEST_F(QuicTest, ApplicationCloseReachesThePeer) {
  QuicSim sim;
  Start(sim);
  ASSERT_TRUE(Handshake(sim));
  server_conn_->Close(1, "keepalive timeout");  // EMQX: control stream down
  ASSERT_TRUE(sim.RunUntil([&] { return client_->peer_closed(); }, 5 * kSecond));
  EXPECT_EQ(client_->peer_app_error(), 1u);
  EXPECT_TRUE(sim.RunUntil([&] { return endpoint_->connections() == 0; }, 10 * kSecond));
}

TEST_F(QuicTest, ClientMigratesToANewAddress) {
  QuicSim sim;
  Start(sim);
  // The client moves to a new local address (a new port, as after a NAT rebind).
  const auto moved = quic::Address::FromIpPort("198.18.0.1", 50999);
  EchoAround(sim, [&] {
    sim.set_client_addr(moved);
    ASSERT_TRUE(client_->MigrateTo(moved, sim.now()).ok());
  });
  EXPECT_EQ(server_conn_->path().remote, moved);
}

}  // namespace
}  // namespace qbridge::quic
