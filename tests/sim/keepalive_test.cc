// Regression tests of the keepalive incident (mqtt-over-quic.md 3), on whole appliances
// (worker core + controlplane core, real QUIC and TLS) joined by a simulated network with a
// manual clock: an edge qbridge bridging north to a cloud qbridge, and NanoMQ-like raw
// clients. No real time passes; every run is a function of its inputs.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "mqtt/codec.h"
#include "mqtt/framer.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/sim_net.h"

namespace qbridge::testing {
namespace {

using quic::kMillisecond;
using quic::kSecond;

constexpr uint16_t kKeepaliveS = 2;
constexpr uint64_t kKa = kKeepaliveS * kSecond;

quic::Address Addr(const char* ip, uint16_t port) { return quic::Address::FromIpPort(ip, port); }

dp::WorkerConfig CloudWorker(const quic::TlsContext* tls) {
  dp::WorkerConfig w;
  w.server_tls = tls;
  w.endpoint.retry = quic::RetryMode::kOff;
  w.endpoint.transport.idle_timeout_ns = 10 * kSecond;
  return w;
}

// An edge qbridge with one bridge to a cloud qbridge (the production topology, both ends ours).
struct EdgeToCloud {
  TestTls tls;
  SimNet net;
  quic::Address edge_addr = Addr("198.18.1.1", 40000);
  quic::Address cloud_addr = Addr("198.18.2.1", 14567);
  std::unique_ptr<SimAppliance> cloud, edge;

  explicit EdgeToCloud(bool strict_cloud, std::vector<cp::BridgeSubscription> subs = {},
                       uint64_t connect_timeout_ns = 10 * kSecond) {
    cp::ControlplaneConfig cc;
    cc.south.strict_control_stream_keepalive = strict_cloud;
    cloud = std::make_unique<SimAppliance>(net, cloud_addr, CloudWorker(tls.server.get()), cc);

    dp::WorkerConfig ew;
    dp::BridgeDial d;
    d.local = edge_addr;
    d.remote = cloud_addr;
    d.tls = tls.client.get();
    d.transport.idle_timeout_ns = 10 * kSecond;
    d.transport.handshake_timeout_ns = 2 * kSecond;
    d.data_streams = 2;
    ew.bridges.push_back(d);
    cp::ControlplaneConfig ec;
    cp::BridgeConfig b;
    b.name = "cloud";
    b.client_id = "edge-1";
    b.version = mqtt::Version::k5;
    b.keepalive_s = kKeepaliveS;
    b.connect_timeout_ns = connect_timeout_ns;
    b.subscriptions = std::move(subs);
    ec.bridges.push_back(b);
    edge = std::make_unique<SimAppliance>(net, edge_addr, ew, ec);
    edge->cp->Start(net.now());
  }

  const cp::BridgeStatus& bridge() const { return edge->cp->bridge(0); }
  bool Up() const { return bridge().state == cp::BridgeState::kUp; }
  // A 20 Mbit/s bottleneck from the edge to the cloud, with a 128 KiB queue.
  void SlowUplink() { net.Bottleneck(edge_addr, cloud_addr, 20'000'000, 128 * 1024); }
};

std::vector<uint8_t> Encode(const mqtt::Packet& p, mqtt::Version v) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(mqtt::EncodeTo(p, v, out));
  return out;
}

// (a) Continuous outbound (QoS 0 and 1 PUBLISH) and inbound (PUBACK) data-stream traffic for
// 20 x keepalive against a cloud that counts control-stream packets only (EMQX <= 5.8.1):
// a PINGREQ leaves on stream 0 every keepalive, none late, and the bridge is never kicked.
TEST(KeepaliveSim, NorthPingsOnScheduleUnderTwoWayDataTraffic) {
  EdgeToCloud t(/*strict_cloud=*/true);
  ASSERT_TRUE(t.net.RunUntil([&] { return t.Up(); }, 5 * kSecond));
  std::vector<uint8_t> payload(512, 'x');
  uint64_t sent = 0;
  t.net.AddNode({[&](uint64_t now) {
                   // Two publishes per millisecond, one of each QoS, on both data streams.
                   mqtt::Publish p;
                   p.topic = "telemetry/a";
                   p.payload = payload;
                   p.qos = mqtt::QoS::k1;
                   sent += t.edge->worker->PublishNorth(0, int(sent % 2), p, now);
                   p.qos = mqtt::QoS::k0;
                   sent += t.edge->worker->PublishNorth(0, int(sent % 2), p, now);
                   return false;
                 },
                 [] { return quic::kNever; }});
  const uint64_t start = t.net.now();
  t.net.RunUntil([] { return false; }, 20 * kKa);

  const cp::BridgeStatus& b = t.bridge();
  EXPECT_EQ(b.reconnects, 0u);
  EXPECT_EQ(b.state, cp::BridgeState::kUp);
  EXPECT_GE(b.pingreqs_sent, 19u);
  EXPECT_EQ(b.pingresps, b.pingreqs_sent);
  EXPECT_LT(b.max_pingreq_gap_ns, kKa) << "a PINGREQ was late";
  // The control stream never went a keepalive without a packet, and it was not idle for
  // long either: a PINGREQ goes out a little before the keepalive.
  EXPECT_LT(b.max_control_silence_ns, kKa);
  EXPECT_GT(b.max_control_silence_ns, kKa / 2);
  ASSERT_EQ(b.events.size(), 1u);
  EXPECT_EQ(b.events[0].what, "connected");
  EXPECT_NE(b.up_since, 0u);
  EXPECT_EQ(t.edge->worker->control_overtaken(), 0u);
  // The traffic really flowed both ways on data streams.
  EXPECT_GT(sent, 70'000u);
  EXPECT_GT(t.cloud->worker->stats().publish_in.Get(), 70'000u);
  EXPECT_GT(t.edge->worker->stats().mqtt_packets_in.Get(), 35'000u);  // PUBACKs
  // The strict cloud saw the PINGREQs on its control stream and never timed the bridge out.
  EXPECT_EQ(t.cloud->cp->south().keepalive_timeouts, 0u);
  auto s = t.cloud->cp->Session("edge-1");
  ASSERT_TRUE(s.has_value());
  EXPECT_GE(s->pingreqs, 19u);
  EXPECT_LT(s->max_control_gap_ns, kKa);
  EXPECT_GE(t.net.now() - start, 20 * kKa);
}

// (b) The send path saturated: a 20 Mbit/s bottleneck and megabytes queued on the data
// streams, so the congestion window is always full. Each PINGREQ still leaves in the first
// write after its deadline that sends anything (control bytes are never overtaken by data),
// within one round trip of the deadline.
TEST(KeepaliveSim, NorthPingreqLeavesFirstWhenTheSendPathIsSaturated) {
  EdgeToCloud t(/*strict_cloud=*/true);
  t.SlowUplink();
  ASSERT_TRUE(t.net.RunUntil([&] { return t.Up(); }, 5 * kSecond));
  std::vector<uint8_t> payload(8 * 1024, 'y');
  uint64_t pings_seen = 0, pending_since = 0, max_delay = 0, min_backlog = UINT64_MAX;
  t.net.AddNode({[&](uint64_t now) {
                   // Keep 2 MiB queued on each data stream.
                   for (int slot = 0; slot < 2; ++slot) {
                     while (t.edge->worker->NorthBuffered(0, slot) < (2u << 20)) {
                       mqtt::Publish p;
                       p.topic = "bulk";
                       p.payload = payload;
                       if (!t.edge->worker->PublishNorth(0, slot, p, now)) break;
                     }
                   }
                   const cp::BridgeStatus& b = t.bridge();
                   if (b.pingreqs_sent != pings_seen) {
                     pings_seen = b.pingreqs_sent;
                     pending_since = now;
                     min_backlog = std::min(min_backlog, t.edge->worker->NorthBuffered(0, 0));
                   }
                   if (pending_since) {
                     const uint64_t wire = now - t.edge->cp->ControlIdleNs(0, now);
                     if (wire >= pending_since) {
                       max_delay = std::max(max_delay, wire - pending_since);
                       pending_since = 0;
                     }
                   }
                   return false;
                 },
                 [] { return quic::kNever; }});
  t.net.RunUntil([] { return false; }, 20 * kKa);

  const cp::BridgeStatus& b = t.bridge();
  EXPECT_EQ(b.reconnects, 0u);
  EXPECT_GE(b.pingreqs_sent, 19u);
  EXPECT_LT(b.max_pingreq_gap_ns, kKa);
  EXPECT_EQ(t.edge->worker->control_overtaken(), 0u);
  EXPECT_GT(min_backlog, 1u << 20) << "the send path was not saturated";
  // The simulation steps 1 ms at a time; the pacer may hold a packet for one more step.
  EXPECT_LE(max_delay, 3 * kMillisecond) << "PINGREQ waited behind data";
  EXPECT_EQ(t.cloud->cp->south().keepalive_timeouts, 0u);
  EXPECT_GT(t.net.dropped, 0u) << "the bottleneck never overflowed";
  std::printf("PINGREQ deadline-to-wire max %.2f ms; PINGRESP RTT max %.1f ms\n",
              double(max_delay) / 1e6, double(b.rtt_max_ns) / 1e6);
}

// QoS 0 offered faster than a slow uplink carries it waits on the data slot up to a bound,
// then is dropped and counted: the edge's memory does not grow with the flood, and the
// bridge (its keepalive included) stays up.
TEST(KeepaliveSim, NorthQos0BeyondTheSlotsBoundIsDroppedNotBuffered) {
  EdgeToCloud t(/*strict_cloud=*/true);
  t.SlowUplink();
  ASSERT_TRUE(t.net.RunUntil([&] { return t.Up(); }, 5 * kSecond));
  std::vector<uint8_t> payload(8 * 1024, 'z');
  uint64_t offered = 0, refused = 0, max_buffered = 0;
  t.net.AddNode({[&](uint64_t now) {
                   // 64 MiB offered within a quarter of a second: the link carries 20 Mbit/s.
                   for (int i = 0; i < 32 && offered < 8192; ++i, ++offered) {
                     mqtt::Publish p;
                     p.topic = "flood";
                     p.payload = payload;
                     refused += !t.edge->worker->PublishNorth(0, 0, p, now);
                   }
                   max_buffered = std::max(max_buffered, t.edge->worker->NorthBuffered(0, 0));
                   return false;
                 },
                 [] { return quic::kNever; }});
  t.net.RunUntil([] { return false; }, 4 * kKa);

  const dp::BridgeTraffic& bt = t.edge->worker->bridge_traffic(0);
  EXPECT_EQ(offered, 8192u);
  EXPECT_GT(refused, 4000u) << "the bound never held anything back";
  EXPECT_EQ(bt.drop_queue_full.Get(), refused);
  EXPECT_LE(max_buffered, dp::Worker::kMaxNorthQos0Bytes + payload.size() + 64);
  EXPECT_GT(max_buffered, dp::Worker::kMaxNorthQos0Bytes / 2) << "the uplink kept up: no test";
  const cp::BridgeStatus& b = t.bridge();
  EXPECT_EQ(b.reconnects, 0u);
  EXPECT_LT(b.max_pingreq_gap_ns, kKa);
  // Everything it took went up.
  EXPECT_TRUE(t.net.RunUntil([&] { return t.edge->worker->NorthBuffered(0, 0) == 0; }, 30 * kSecond));
}

// A client that behaves like NanoMQ's QUIC bridge: CONNECT on stream 0, QoS 0 PUBLISH on
// data streams, never a PINGREQ.
struct NanoLikeClient {
  RecordingEvents ev;
  std::unique_ptr<quic::Connection> conn;
  SimNet::Port* port;
  std::vector<uint8_t> scratch = std::vector<uint8_t>(64 * 1500);
  bool closed = false;
  uint64_t closed_at = 0;
  int64_t streams[2] = {-1, -1};
  uint64_t connect_at = 0;
  uint64_t next_publish = 0;
  uint64_t published = 0;
  mqtt::Version version;

  NanoLikeClient(SimNet& net, const quic::TlsContext& tls, const quic::Address& self,
                 const quic::Address& server, mqtt::Version v)
      : port(&net.AddPort(self)), version(v) {
    quic::TransportConfig tc;
    tc.idle_timeout_ns = 10 * kSecond;
    auto c = quic::Connection::Connect(tls, tc, quic::Path{self, server}, &ev, net.now());
    EXPECT_TRUE(c.ok());
    conn = std::move(*c);
    ev.conn = conn.get();
    net.AddNode({[this](uint64_t now) { return Poll(now); },
                 [this] { return closed ? quic::kNever : std::min(conn->Expiry(), next_publish); }});
  }

  bool Poll(uint64_t now) {
    if (closed) return false;
    size_t n = port->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) {
      if (!conn->Read(p, d, now)) Close(now);
    });
    if (conn->Expiry() <= now && !conn->HandleExpiry(now)) Close(now);
    if (!closed && ev.confirmed && connect_at == 0) {
      mqtt::Connect c;
      c.version = version;
      c.client_id = "nano-1";
      c.keep_alive = kKeepaliveS;
      EXPECT_EQ(*conn->OpenStream(), 0);
      EXPECT_TRUE(conn->Send(0, quic::Buffer::Copy(Encode(c, version))).ok());
      streams[0] = *conn->OpenStream();
      streams[1] = *conn->OpenStream();
      connect_at = now;
      next_publish = now + 100 * kMillisecond;
    }
    if (!closed && connect_at && now >= next_publish) {
      mqtt::Publish p;
      p.topic = "nano/up";
      static const uint8_t kPayload[64] = {};
      p.payload = kPayload;
      EXPECT_TRUE(conn->Send(streams[published % 2],
                             quic::Buffer::Copy(Encode(p, version)))
                      .ok());
      ++published;
      next_publish = now + 100 * kMillisecond;
    }
    if (!closed) {
      conn->Write(now, scratch, 64, [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
        port->Send(p, d, seg);
      });
    }
    return n > 0;
  }
  void Close(uint64_t now) {
    if (!closed) closed_at = now;
    closed = true;
  }
  // The first packet the server sent on the control stream after CONNACK, if any.
  std::optional<mqtt::Packet> SecondControlPacket() {
    mqtt::Framer f;
    std::vector<mqtt::Packet> got;
    (void)f.Feed(ev.data[0], [&](const mqtt::Frame& fr) {
      mqtt::Packet p;
      if (mqtt::Decode(fr.header, fr.body, version, &p).ok()) got.push_back(p);
      return true;
    });
    if (got.size() < 2) return std::nullopt;
    return got[1];
  }
};

// (c) EMQX >= 5.8.2 semantics on our south side: data-stream packets keep the connection
// alive, so a NanoMQ-like client that never sends PINGREQ stays connected for 20 x keepalive.
TEST(KeepaliveSim, SouthDataStreamTrafficKeepsNanoLikeClientConnected) {
  TestTls tls;
  SimNet net;
  const auto server = Addr("198.18.2.1", 14567);
  SimAppliance cloud(net, server, CloudWorker(tls.server.get()), cp::ControlplaneConfig{});
  NanoLikeClient client(net, *tls.client, Addr("198.18.3.1", 50000), server, mqtt::Version::k311);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->Session("nano-1").has_value(); }, 5 * kSecond));
  net.RunUntil([] { return false; }, 20 * kKa);
  EXPECT_FALSE(client.closed);
  EXPECT_EQ(cloud.cp->south().keepalive_timeouts, 0u);
  EXPECT_TRUE(cloud.cp->Session("nano-1").has_value());
  EXPECT_GE(client.published, 390u);
  EXPECT_GE(cloud.worker->stats().publish_in.Get(), 390u);
  EXPECT_EQ(cloud.cp->south().pingreqs, 0u);
}

// (c, strict) The same client against strict_control_stream_keepalive (EMQX <= 5.8.1): closed
// at 1.5 x keepalive with DISCONNECT 0x8D on the control stream, then app error 1.
TEST(KeepaliveSim, StrictModeClosesSilentControlStreamAtOneAndAHalfKeepalive) {
  TestTls tls;
  SimNet net;
  const auto server = Addr("198.18.2.1", 14567);
  cp::ControlplaneConfig cc;
  cc.south.strict_control_stream_keepalive = true;
  SimAppliance cloud(net, server, CloudWorker(tls.server.get()), cc);
  NanoLikeClient client(net, *tls.client, Addr("198.18.3.1", 50000), server, mqtt::Version::k5);
  ASSERT_TRUE(net.RunUntil([&] { return client.closed; }, 20 * kKa));
  EXPECT_EQ(cloud.cp->south().keepalive_timeouts, 1u);
  // CONNECT arrives one link delay (5 ms) after the client sent it; the close travels back.
  const uint64_t lived = client.closed_at - client.connect_at;
  EXPECT_GE(lived, kKa * 3 / 2);
  EXPECT_LE(lived, kKa * 3 / 2 + 30 * kMillisecond);
  EXPECT_TRUE(client.conn->peer_closed());
  EXPECT_EQ(client.conn->peer_app_error(), 1u);
  auto d = client.SecondControlPacket();
  ASSERT_TRUE(d.has_value());
  ASSERT_TRUE(std::holds_alternative<mqtt::Disconnect>(*d));
  EXPECT_EQ(std::get<mqtt::Disconnect>(*d).reason, mqtt::ReasonCode::kKeepAliveTimeout);
  EXPECT_GE(client.published, 20u);  // it was publishing on data streams all along
}

// (d) PINGRESP withheld (the path from the cloud black-holed): the bridge declares the link
// dead at the PINGRESP deadline, backs off while dials fail, reconnects once the path is
// back, and restores its subscriptions, the data-stream one included.
TEST(KeepaliveSim, MissingPingrespReconnectsWithBackoffAndResubscribes) {
  EdgeToCloud t(/*strict_cloud=*/false,
                {{"cmd/#", mqtt::QoS::k1, /*slot=*/0, "", "", ""},
                 {"ctl/#", mqtt::QoS::k1, /*slot=*/-1, "", "", ""}},
                /*connect_timeout_ns=*/2 * kSecond);
  ASSERT_TRUE(t.net.RunUntil(
      [&] {
        auto s = t.cloud->cp->Session("edge-1");
        return t.Up() && s && s->subscriptions == 2 && t.bridge().subacks == 2;
      },
      5 * kSecond));
  const dp::ConnRef first = t.cloud->cp->Session("edge-1")->conn;

  // Black-hole everything from the cloud to the edge.
  bool blackhole = true;
  t.net.filter = [&](const quic::Address& from, const quic::Address&) {
    return !(blackhole && from == t.cloud_addr);
  };
  const uint64_t cut = t.net.now();
  ASSERT_TRUE(t.net.RunUntil([&] { return t.bridge().pingresp_timeouts == 1; }, 2 * kKa));
  // The next PINGREQ was due within one keepalive; its PINGRESP deadline is keepalive / 2.
  EXPECT_LE(t.net.now() - cut, kKa + kKa / 2 + 2 * kMillisecond);
  EXPECT_NE(t.bridge().state, cp::BridgeState::kUp);

  // Dials fail while the path is down; the backoff grows.
  t.net.RunUntil([] { return false; }, 8 * kSecond);
  EXPECT_GE(t.bridge().dials, 3u);
  EXPECT_EQ(t.bridge().reconnects, 0u);

  blackhole = false;
  ASSERT_TRUE(t.net.RunUntil(
      [&] {
        auto s = t.cloud->cp->Session("edge-1");
        return t.Up() && s && !(s->conn == first) && s->subscriptions == 2 &&
               t.bridge().subacks == 4;
      },
      15 * kSecond));
  EXPECT_EQ(t.bridge().reconnects, 1u);
  EXPECT_EQ(t.bridge().suback_failures, 0u);
  // The events say why: the PINGRESP timeout, dials that failed, then connected again.
  const auto& ev = t.bridge().events;
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.front().what, "connected");
  EXPECT_EQ(ev[1].what, "down: no PINGRESP in time");
  EXPECT_EQ(ev.back().what, "connected");
  for (size_t i = 2; i + 1 < ev.size(); ++i) EXPECT_EQ(ev[i].what.rfind("dial failed: ", 0), 0u) << ev[i].what;
  EXPECT_GE(t.bridge().up_since, cut);
  // The reconnect resumed the first connection's TLS session with CONNECT in 0-RTT.
  EXPECT_GE(t.edge->worker->stats().north_0rtt_dials.Get(), 1u);
  EXPECT_EQ(t.edge->worker->stats().north_0rtt_accepted.Get(), 1u);
  // And keepalive runs again on the new connection.
  const uint64_t pings = t.bridge().pingreqs_sent;
  t.net.RunUntil([] { return false; }, 3 * kKa);
  EXPECT_GE(t.bridge().pingreqs_sent, pings + 2);
  EXPECT_EQ(t.bridge().pingresp_timeouts, 1u);
}

}  // namespace
}  // namespace qbridge::testing
