// Routing through whole appliances in the simulated network: south subscribers on the
// stream that made the subscription (EMQX's model), and bridge forwards and subscriptions
// with NanoMQ's rewrite rules, edge -> cloud and back.
#include <gtest/gtest.h>

#include <set>

#include "tests/support/quic_test_util.h"
#include "tests/support/sim_mqtt_client.h"
#include "tests/support/sim_edge_cloud.h"
#include "tests/support/sim_net.h"

namespace qbridge::testing {
namespace {

using quic::kSecond;
using mqtt::PacketType;

TEST(RoutingSim, SouthSubscriberGetsPublishesOnItsSubscriptionStream) {
  TestTls tls;
  SimNet net;
  const auto server = Addr("198.18.2.1", 14567);
  SimAppliance cloud(net, server, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient a(net, *tls.client, Addr("198.18.3.1", 50000), server);
  SimMqttClient b(net, *tls.client, Addr("198.18.3.2", 50000), server);
  ASSERT_TRUE(net.RunUntil([&] { return a.confirmed() && b.confirmed(); }, 2 * kSecond));
  a.Connect("sub-a");
  b.Connect("pub-b");
  const int64_t a4 = a.Open(), a8 = a.Open(), b4 = b.Open();
  a.Send(a4, Sub(1, "t/#"));
  ASSERT_TRUE(net.RunUntil([&] { return a.CountType(a4, PacketType::kSuback) == 1; }, 2 * kSecond));
  // The snapshot reaches the worker within the same iteration; publish now.
  b.Send(b4, Pub("t/1", "hello", mqtt::QoS::k1, 7));
  ASSERT_TRUE(net.RunUntil([&] { return a.Publishes(a4).size() == 1; }, 2 * kSecond));
  EXPECT_EQ(a.Publishes(a4)[0], (std::pair<std::string, std::string>{"t/1", "hello"}));
  EXPECT_TRUE(a.Publishes(a8).empty());
  ASSERT_TRUE(net.RunUntil([&] { return b.CountType(b4, PacketType::kPuback) == 1; }, 2 * kSecond));
  // QoS 1 to the subscriber: it acknowledges on the same stream.
  mqtt::PubAck ack;
  ack.packet_id = 1;
  a.Send(a4, ack);

  // UNSUBSCRIBE from another stream: 0x11, and the subscription stays.
  mqtt::Unsubscribe un;
  un.packet_id = 2;
  un.filters.push_back("t/#");
  a.Send(a8, un);
  ASSERT_TRUE(net.RunUntil([&] { return a.CountType(a8, PacketType::kUnsuback) == 1; }, 2 * kSecond));
  {
    mqtt::Framer f;
    mqtt::Packet p;
    const auto raw = a.Received(a8)[0];
    (void)f.Feed(raw, [&](const mqtt::Frame& fr) {
      EXPECT_TRUE(mqtt::Decode(fr.header, fr.body, mqtt::Version::k5, &p).ok());
      return true;
    });
    ASSERT_TRUE(std::holds_alternative<mqtt::Unsuback>(p));
    EXPECT_EQ(std::get<mqtt::Unsuback>(p).reasons,
              std::vector<mqtt::ReasonCode>{mqtt::ReasonCode::kNoSubscriptionExisted});
  }
  b.Send(b4, Pub("t/2", "again", mqtt::QoS::k0));
  ASSERT_TRUE(net.RunUntil([&] { return a.Publishes(a4).size() == 2; }, 2 * kSecond));

  // Closing the subscription's stream ends the subscription (EMQX model).
  ASSERT_TRUE(a.conn().SendFin(a4).ok());
  net.RunUntil([] { return false; }, 200 * quic::kMillisecond);
  const uint64_t unrouted = cloud.worker->stats().drop_no_route.Get();
  b.Send(b4, Pub("t/3", "gone", mqtt::QoS::k0));
  ASSERT_TRUE(net.RunUntil(
      [&] { return cloud.worker->stats().drop_no_route.Get() == unrouted + 1; }, 2 * kSecond));
  EXPECT_EQ(a.Publishes(a4).size(), 2u);
  EXPECT_GE(cloud.cp->south().snapshots_freed, 1u);
}

// A subscriber that announced Receive Maximum 2 never has more than 2 QoS 1 deliveries
// unacknowledged: the rest wait, in order, and go out as it acknowledges.
TEST(RoutingSim, DeliveriesKeepWithinTheSubscribersReceiveMaximum) {
  TestTls tls;
  SimNet net;
  const auto server = Addr("198.18.2.1", 14567);
  SimAppliance cloud(net, server, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient a(net, *tls.client, Addr("198.18.3.1", 50000), server);
  SimMqttClient b(net, *tls.client, Addr("198.18.3.2", 50000), server);
  ASSERT_TRUE(net.RunUntil([&] { return a.confirmed() && b.confirmed(); }, 2 * kSecond));
  mqtt::Connect slow;
  slow.client_id = "slow-sub";
  slow.keep_alive = 30;
  slow.properties.receive_maximum = 2;
  EXPECT_EQ(a.Open(), 0);
  a.Send(0, slow);
  b.Connect("pub-b");
  const int64_t a4 = a.Open(), b4 = b.Open();
  a.Send(a4, Sub(1, "t/#"));
  ASSERT_TRUE(net.RunUntil([&] { return a.CountType(a4, PacketType::kSuback) == 1; }, 2 * kSecond));
  for (uint16_t i = 1; i <= 6; ++i) b.Send(b4, Pub("t/1", std::to_string(i).c_str(), mqtt::QoS::k1, i));
  ASSERT_TRUE(net.RunUntil([&] { return b.CountType(b4, PacketType::kPuback) == 6; }, 2 * kSecond));
  net.RunUntil([] { return false; }, 200 * quic::kMillisecond);
  ASSERT_EQ(a.Publishes(a4).size(), 2u);  // the window, and no more
  // Acknowledge one at a time: each ack lets exactly one more through, in order.
  for (size_t acked = 0; acked < 6; ++acked) {
    std::vector<uint16_t> ids;
    for (const auto& raw : a.Received(a4)) {
      if ((raw[0] >> 4) == uint8_t(PacketType::kPublish)) {
        const size_t topic_len = size_t(raw[2]) << 8 | raw[3];
        ids.push_back(uint16_t(raw[4 + topic_len] << 8 | raw[5 + topic_len]));
      }
    }
    ASSERT_GT(ids.size(), acked);
    mqtt::PubAck ack;
    ack.packet_id = ids[acked];
    a.Send(a4, ack);
    const size_t want = std::min<size_t>(acked + 3, 6);
    ASSERT_TRUE(net.RunUntil([&] { return a.Publishes(a4).size() == want; }, 2 * kSecond)) << "after ack " << acked;
    net.RunUntil([] { return false; }, 50 * quic::kMillisecond);
    EXPECT_EQ(a.Publishes(a4).size(), want);
  }
  const auto got = a.Publishes(a4);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].second, std::to_string(i + 1));
  EXPECT_EQ(cloud.worker->stats().drop_client_queue_full.Get(), 0u);
}

// Edge qbridge: devices publish telemetry on its south listener; its bridge forwards it to
// the cloud qbridge with a prefix, and brings commands back down under a local prefix.
TEST(RoutingSim, BridgeForwardsUpAndSubscriptionsDown) {
  TestTls tls;
  SimNet net;
  const auto cloud_addr = Addr("198.18.2.1", 14567);
  const auto edge_addr = Addr("198.18.1.1", 14567);
  SimAppliance cloud(net, cloud_addr, Listener(tls.server.get()), cp::ControlplaneConfig{});

  dp::WorkerConfig ew = Listener(tls.server.get());
  dp::BridgeDial d;
  d.local = edge_addr;
  d.remote = cloud_addr;
  d.tls = tls.client.get();
  d.data_streams = 2;
  ew.bridges.push_back(d);
  cp::ControlplaneConfig ec;
  cp::BridgeConfig b;
  b.name = "cloud";
  b.client_id = "edge-1";
  b.version = mqtt::Version::k5;
  b.keepalive_s = 10;
  b.forwards.push_back(cp::BridgeForward{"telemetry/#", "", mqtt::QoS::k1, false, "edge1/", "", 0});
  b.subscriptions.push_back(cp::BridgeSubscription{"cmd/edge1/#", mqtt::QoS::k1, 1, "", "down/", ""});
  ec.bridges.push_back(b);
  SimAppliance edge(net, edge_addr, ew, ec);
  edge.cp->Start(net.now());

  SimMqttClient cloud_app(net, *tls.client, Addr("198.18.3.1", 50000), cloud_addr);
  SimMqttClient device(net, *tls.client, Addr("198.18.4.1", 50000), edge_addr);
  ASSERT_TRUE(net.RunUntil(
      [&] {
        return cloud_app.confirmed() && device.confirmed() &&
               edge.cp->bridge(0).state == cp::BridgeState::kUp && edge.cp->bridge(0).subacks == 1;
      },
      3 * kSecond));
  cloud_app.Connect("app");
  device.Connect("dev-1");
  const int64_t c4 = cloud_app.Open(), d4 = device.Open();
  cloud_app.Send(c4, Sub(1, "edge1/#"));
  device.Send(d4, Sub(1, "down/#"));
  ASSERT_TRUE(net.RunUntil(
      [&] {
        return cloud_app.CountType(c4, PacketType::kSuback) == 1 &&
               device.CountType(d4, PacketType::kSuback) == 1;
      },
      2 * kSecond));

  device.Send(d4, Pub("telemetry/t1", "21.5", mqtt::QoS::k1, 1));
  ASSERT_TRUE(net.RunUntil([&] { return cloud_app.Publishes(c4).size() == 1; }, 2 * kSecond));
  EXPECT_EQ(cloud_app.Publishes(c4)[0],
            (std::pair<std::string, std::string>{"edge1/telemetry/t1", "21.5"}));

  cloud_app.Send(c4, Pub("cmd/edge1/reboot", "now", mqtt::QoS::k0));
  ASSERT_TRUE(net.RunUntil([&] { return device.Publishes(d4).size() == 1; }, 2 * kSecond));
  EXPECT_EQ(device.Publishes(d4)[0],
            (std::pair<std::string, std::string>{"down/cmd/edge1/reboot", "now"}));
  // A topic no forward rule matches stays local.
  device.Send(d4, Pub("other/x", "local", mqtt::QoS::k0));
  net.RunUntil([] { return false; }, 200 * quic::kMillisecond);
  EXPECT_EQ(cloud_app.Publishes(c4).size(), 1u);
  EXPECT_EQ(edge.worker->stats().routed_north.Get(), 1u);
}

// Nothing acknowledged is lost: a device's QoS 1 PUBLISH forwarded upstream is acknowledged
// only after the upstream acknowledged it. With the path to the cloud cut, messages wait
// (held, then replayed with DUP after the reconnect) and no PUBACK reaches the device; once
// the path is back every message arrives and every PUBACK follows.
TEST(RoutingSim, QoS1IsAcknowledgedOnlyAfterTheUpstreamHasIt) {
  EdgeAndCloud t;
  cp::BridgeConfig b = EdgeAndCloud::Bridge("cloud", {cp::BridgeForward{"t/#", "", mqtt::QoS::k1, false, "", "", 0}});
  b.connect_timeout_ns = 3 * kSecond;
  b.backoff_max_ns = 1 * kSecond;
  ASSERT_TRUE(t.Start({b}, "t/#", mqtt::QoS::k1, {}, /*handshake_timeout_ns=*/2 * kSecond));
  SimNet& net = t.net;
  SimMqttClient& app = *t.app;
  SimMqttClient& dev = *t.dev;
  SimAppliance& edge = *t.edge;
  const int64_t a4 = t.a4, d4 = t.d4;
  const quic::Address edge_addr = t.edge_addr;

  // One message through while all is well: its PUBACK comes after the cloud's.
  dev.Send(d4, Pub("t/0", "m0", mqtt::QoS::k1, 1));
  ASSERT_TRUE(net.RunUntil([&] { return dev.CountType(d4, PacketType::kPuback) == 1; }, 2 * kSecond));
  EXPECT_EQ(app.Publishes(a4).size(), 1u);

  // Cut the path from the edge to the cloud; publish three more.
  bool cut = true;
  net.filter = [&](const quic::Address& from, const quic::Address&) { return !(cut && from == edge_addr); };
  dev.Send(d4, Pub("t/1", "m1", mqtt::QoS::k1, 2));
  dev.Send(d4, Pub("t/2", "m2", mqtt::QoS::k1, 3));
  net.RunUntil([] { return false; }, 6 * kSecond);  // the bridge notices and redials in vain
  dev.Send(d4, Pub("t/3", "m3", mqtt::QoS::k1, 4));
  net.RunUntil([] { return false; }, 2 * kSecond);
  EXPECT_EQ(dev.CountType(d4, PacketType::kPuback), 1u) << "acknowledged before the upstream had it";
  EXPECT_EQ(edge.cp->bridge(0).pingresp_timeouts, 1u);  // the link was declared dead
  EXPECT_GE(edge.cp->bridge(0).dials, 2u);              // and redialled
  EXPECT_EQ(edge.worker->NorthPending(0), 3u);

  cut = false;
  ASSERT_TRUE(net.RunUntil([&] { return dev.CountType(d4, PacketType::kPuback) == 4; }, 15 * kSecond));
  EXPECT_EQ(edge.worker->NorthPending(0), 0u);
  // Every message arrived; m1 and m2 may have reached the cloud before the cut closed the
  // connection (then they come again, DUP, as QoS 1 allows) but none is missing.
  std::set<std::string> got;
  for (const auto& [topic, payload] : app.Publishes(a4)) got.insert(payload);
  EXPECT_EQ(got, (std::set<std::string>{"m0", "m1", "m2", "m3"}));
  EXPECT_GE(edge.cp->bridge(0).reconnects, 1u);
}

// Two worker cores: the device's connection on core 1, the bridge on core 0. QoS 1 goes
// over the ring to the bridge's core and its PUBACK comes back the same way, only after the
// cloud's; a subscriber on the other core gets QoS 1 deliveries over the ring too.
TEST(RoutingSim, QoS1CrossesCoresBothWays) {
  TwoCoreEdge t;
  ASSERT_TRUE(t.Start(cp::BridgeForward{"t/#", "", mqtt::QoS::k1, false, "up/", "", 0}, "up/t/#", "t/#"));
  SimNet& net = t.net;
  SimMqttClient &app = *t.app, &dev = *t.dev, &mon = *t.mon;
  SimAppliance& edge = *t.edge;
  const int64_t a4 = t.a4, d4 = t.d4, m4 = t.m4;
  for (uint16_t i = 1; i <= 20; ++i) dev.Send(d4, Pub("t/x", std::to_string(i).c_str(), mqtt::QoS::k1, i));
  ASSERT_TRUE(net.RunUntil([&] { return dev.CountType(d4, PacketType::kPuback) == 20; }, 3 * kSecond));
  for (const auto& raw : dev.Received(d4)) {  // MQTT 5 PUBACK: reason 0 or left out
    if ((raw[0] >> 4) == uint8_t(PacketType::kPuback) && raw.size() > 4) {
      EXPECT_EQ(raw[4], 0) << "a failed PUBACK for packet " << (raw[2] << 8 | raw[3]);
    }
  }
  ASSERT_TRUE(net.RunUntil([&] { return app.Publishes(a4).size() == 20 && mon.Publishes(m4).size() == 20; },
                           2 * kSecond));
  EXPECT_EQ(app.Publishes(a4)[0].first, "up/t/x");
  EXPECT_EQ(app.Publishes(a4)[19].second, "20");
  EXPECT_EQ(edge.workers[1]->stats().routed_cross_core.Get(), 40u);  // to the bridge and to mon
  EXPECT_EQ(edge.workers[1]->stats().drop_route_failed.Get(), 0u);
}

// The upstream announces Receive Maximum 4 (EMQX: max_inflight): the bridge never has more
// than 4 QoS 1 PUBLISHes unacknowledged (the broker would disconnect with 0x93), queues the
// rest, and every message of a 40-message burst still arrives and is acknowledged.
TEST(RoutingSim, BridgeHonoursTheUpstreamsReceiveMaximum) {
  EdgeAndCloud t;
  cp::ControlplaneConfig cc;
  cc.south.receive_maximum = 4;
  ASSERT_TRUE(t.Start({EdgeAndCloud::Bridge("cloud", {cp::BridgeForward{"t/#", "", mqtt::QoS::k1, false, "", "", 0}})},
                      "t/#", mqtt::QoS::k1, cc));
  for (uint16_t i = 1; i <= 40; ++i) t.dev->Send(t.d4, Pub("t/x", std::to_string(i).c_str(), mqtt::QoS::k1, i));
  size_t most = 0;
  ASSERT_TRUE(t.net.RunUntil([&] {
    most = std::max(most, t.edge->worker->NorthInflight(0));
    return t.dev->CountType(t.d4, PacketType::kPuback) == 40;
  }, 5 * kSecond)) << "acked " << t.dev->CountType(t.d4, PacketType::kPuback);
  EXPECT_EQ(most, 4u);
  EXPECT_EQ(t.app->Publishes(t.a4).size(), 40u);
  EXPECT_EQ(t.edge->cp->bridge(0).reconnects, 0u);  // never kicked for exceeding the window
  EXPECT_EQ(t.cloud->worker->stats().drop_bad_stream.Get(), 0u);
}

// QoS 2 end to end: a device's QoS 2 PUBLISH under a QoS 2 forward rule reaches the cloud
// as QoS 2 (PUBREC, PUBREL, PUBCOMP with the upstream), once, and a QoS 2 subscriber there
// gets it at QoS 2.
TEST(RoutingSim, QoS2IsForwardedAsQoS2) {
  EdgeAndCloud t;
  ASSERT_TRUE(t.Start({EdgeAndCloud::Bridge("cloud", {cp::BridgeForward{"t/#", "", mqtt::QoS::k2, false, "", "", 0}})},
                      "t/#", mqtt::QoS::k2));
  t.dev->Send(t.d4, Pub("t/x", "exactly-once", mqtt::QoS::k2, 9));
  ASSERT_TRUE(t.net.RunUntil([&] { return t.dev->CountType(t.d4, PacketType::kPubrec) == 1; }, 2 * kSecond));
  mqtt::PubAck rel;
  rel.type = PacketType::kPubrel;
  rel.packet_id = 9;
  t.dev->Send(t.d4, rel);
  ASSERT_TRUE(t.net.RunUntil([&] {
    return t.dev->CountType(t.d4, PacketType::kPubcomp) == 1 && t.app->Publishes(t.a4).size() == 1 &&
           t.edge->worker->NorthPending(0) == 0;
  }, 2 * kSecond)) << "pending " << t.edge->worker->NorthPending(0);
  // The subscriber's copy is QoS 2 (fixed header flags 0b0100), so the upstream got QoS 2.
  uint8_t header = 0;
  for (const auto& raw : t.app->Received(t.a4))
    if ((raw[0] >> 4) == uint8_t(PacketType::kPublish)) header = raw[0];
  EXPECT_EQ((header >> 1) & 3, 2) << "delivered at QoS " << ((header >> 1) & 3);
  EXPECT_EQ(t.app->Publishes(t.a4)[0].second, "exactly-once");
  t.net.RunUntil([] { return false; }, 300 * quic::kMillisecond);
  EXPECT_EQ(t.app->Publishes(t.a4).size(), 1u);
}

// Two bridges from one worker to the same upstream share a 4-tuple (NanoMQ users split
// traffic classes that way): each connection gets its own datagrams, told apart by DCID,
// and both carry their rules' messages.
TEST(RoutingSim, TwoBridgesToOneUpstreamOnOneWorker) {
  EdgeAndCloud t;
  ASSERT_TRUE(t.Start({EdgeAndCloud::Bridge("a", {cp::BridgeForward{"a/#", "", mqtt::QoS::k1, false, "", "", 0}}),
                       EdgeAndCloud::Bridge("b", {cp::BridgeForward{"b/#", "", mqtt::QoS::k1, false, "", "", 0}})},
                      "#"));
  for (uint16_t i = 1; i <= 10; ++i) {
    t.dev->Send(t.d4, Pub(i % 2 ? "a/x" : "b/x", std::to_string(i).c_str(), mqtt::QoS::k1, i));
  }
  ASSERT_TRUE(t.net.RunUntil([&] { return t.dev->CountType(t.d4, PacketType::kPuback) == 10; }, 3 * kSecond));
  ASSERT_TRUE(t.net.RunUntil([&] { return t.app->Publishes(t.a4).size() == 10; }, 2 * kSecond));
  EXPECT_EQ(t.edge->worker->bridge_traffic(0).tx_msgs.Get(), 5u);
  EXPECT_EQ(t.edge->worker->bridge_traffic(1).tx_msgs.Get(), 5u);
  EXPECT_EQ(t.edge->cp->bridge(0).reconnects + t.edge->cp->bridge(1).reconnects, 0u);
  EXPECT_EQ(t.cloud->cp->sessions(), 3u);  // app, edge-a, edge-b
}

// A reload adds a bridge to a running edge: every worker learns it before any route names
// it, it dials, and its forwards carry messages. Then the reload removes it: what it held
// for an unreachable upstream is refused (the device gets failure PUBACKs, not silence).
TEST(RoutingSim, BridgeAddedAndRemovedWhileRunning) {
  EdgeAndCloud t;
  ASSERT_TRUE(t.Start({}, "t/#"));
  dp::BridgeDial d;
  d.local = t.edge_addr;
  d.remote = t.cloud_addr;
  d.tls = t.tls.client.get();
  t.edge->cp->AddBridge(EdgeAndCloud::Bridge("late", {cp::BridgeForward{"t/#", "", mqtt::QoS::k1, false, "", "", 0}}),
                        {reinterpret_cast<uint64_t>(new dp::BridgeDial(d))}, t.net.now());
  ASSERT_TRUE(t.net.RunUntil([&] { return t.edge->cp->bridge(0).state == cp::BridgeState::kUp; }, 3 * kSecond));
  t.net.RunUntil([] { return false; }, 100 * quic::kMillisecond);  // the routes follow the workers' acks
  t.dev->Send(t.d4, Pub("t/1", "via-late", mqtt::QoS::k1, 1));
  ASSERT_TRUE(t.net.RunUntil([&] { return t.app->Publishes(t.a4).size() == 1; }, 2 * kSecond));
  ASSERT_TRUE(t.net.RunUntil([&] { return t.dev->CountType(t.d4, PacketType::kPuback) == 1; }, 2 * kSecond));

  // Cut the upstream; two QoS 1 wait for it; then the bridge is removed.
  t.net.filter = [&](const quic::Address& from, const quic::Address& to) {
    return !(from == t.edge_addr && to == t.cloud_addr);
  };
  t.dev->Send(t.d4, Pub("t/2", "held", mqtt::QoS::k1, 2));
  t.dev->Send(t.d4, Pub("t/3", "held", mqtt::QoS::k1, 3));
  t.net.RunUntil([] { return false; }, 200 * quic::kMillisecond);
  EXPECT_EQ(t.edge->worker->NorthPending(0), 2u);
  ASSERT_TRUE(t.edge->cp->RemoveBridge("late", t.net.now()));
  ASSERT_TRUE(t.net.RunUntil([&] { return t.dev->CountType(t.d4, PacketType::kPuback) == 3; }, 2 * kSecond));
  size_t failed = 0;
  for (const auto& raw : t.dev->Received(t.d4))
    if ((raw[0] >> 4) == uint8_t(PacketType::kPuback) && raw.size() > 4 && raw[4] >= 0x80) ++failed;
  EXPECT_EQ(failed, 2u);
  EXPECT_EQ(t.edge->worker->NorthPending(0), 0u);
  EXPECT_EQ(t.edge->worker->bridge_traffic(0).drop_removed.Get(), 2u);
  EXPECT_FALSE(t.edge->cp->HasBridge("late"));
}

// After a reconnect the bridge resends what was unacknowledged (same ids, DUP) and then what
// waited, never more than the upstream's Receive Maximum at once, and everything arrives.
TEST(RoutingSim, ReplayAfterReconnectKeepsWithinTheWindow) {
  EdgeAndCloud t;
  cp::ControlplaneConfig cc;
  cc.south.receive_maximum = 4;
  cp::BridgeConfig b = EdgeAndCloud::Bridge("cloud", {cp::BridgeForward{"t/#", "", mqtt::QoS::k1, false, "", "", 0}});
  b.connect_timeout_ns = 3 * kSecond;
  b.backoff_max_ns = 1 * kSecond;
  ASSERT_TRUE(t.Start({b}, "t/#", mqtt::QoS::k1, cc, /*handshake_timeout_ns=*/2 * kSecond));
  bool cut = true;
  t.net.filter = [&](const quic::Address& from, const quic::Address& to) {
    return !(cut && from == t.edge_addr && to == t.cloud_addr);
  };
  for (uint16_t i = 1; i <= 10; ++i) t.dev->Send(t.d4, Pub("t/x", std::to_string(i).c_str(), mqtt::QoS::k1, i));
  size_t most = 0;
  t.net.RunUntil([&] {
    most = std::max(most, t.edge->worker->NorthInflight(0));
    return false;
  }, 6 * kSecond);  // the link is declared dead and redialled in vain
  EXPECT_EQ(t.edge->worker->NorthPending(0), 10u);
  cut = false;
  ASSERT_TRUE(t.net.RunUntil([&] {
    most = std::max(most, t.edge->worker->NorthInflight(0));
    return t.dev->CountType(t.d4, PacketType::kPuback) == 10;
  }, 15 * kSecond)) << "acked " << t.dev->CountType(t.d4, PacketType::kPuback);
  EXPECT_LE(most, 4u);
  std::set<std::string> got;
  for (const auto& [topic, payload] : t.app->Publishes(t.a4)) got.insert(payload);
  EXPECT_EQ(got.size(), 10u);
  EXPECT_GE(t.edge->cp->bridge(0).reconnects, 1u);
}

// A device publishing QoS 0 faster than the uplink carries it (24 MiB at once into a 10
// Mbit/s link) is held back, not dropped: once the bridge's data slot holds half its bound
// the edge stops returning credit on the device's stream, and returns it as the slot
// drains. Every message reaches the cloud, in order; the edge never buffers beyond the
// bound; and the device, silent to the edge for seconds at a time while it waits for
// credit (its keepalive is 1 s), is not timed out for it. With qos0_backpressure off the
// same flood is dropped at the bound (counted).
TEST(RoutingSim, Qos0FasterThanTheUplinkHoldsTheDeviceBackInsteadOfDropping) {
  for (const bool backpressure : {true, false}) {
    SCOPED_TRACE(backpressure ? "qos0_backpressure on" : "qos0_backpressure off");
    EdgeAndCloud t;
    t.client_keepalive = 1;
    t.qos0_backpressure = backpressure;
    cp::BridgeConfig b = EdgeAndCloud::Bridge("cloud", {cp::BridgeForward{"flood/#", "", mqtt::QoS::k0, false, "", "", 0}});
    ASSERT_TRUE(t.Start({b}, "flood/#", mqtt::QoS::k0));
    t.net.Bottleneck(t.edge_addr, t.cloud_addr, 10'000'000, 128 * 1024);
    constexpr int kMessages = 3072;
    std::string payload(8 * 1024, 'z');
    for (int i = 0; i < kMessages; ++i) {
      const std::string seq = std::to_string(i);
      std::copy(seq.begin(), seq.end(), payload.begin());
      payload[seq.size()] = ' ';
      t.dev->Send(t.d4, Pub("flood/x", payload.c_str(), mqtt::QoS::k0));
    }
    // Like real clients, each sends PINGREQ while it has nothing else to send: the
    // application always, the device once everything it published has left it.
    uint64_t max_buffered = 0, next_ping = 0;
    t.net.RunUntil([&] {
      max_buffered = std::max(max_buffered, t.edge->worker->NorthBuffered(0, 0));
      if (t.net.now() >= next_ping) {
        next_ping = t.net.now() + 400 * quic::kMillisecond;
        t.app->Send(0, mqtt::Pingreq{});
        if (!t.dev->closed() && t.dev->conn().UnsentBytes(t.d4) == 0) t.dev->Send(0, mqtt::Pingreq{});
      }
      return t.app->CountType(t.a4, PacketType::kPublish) == kMessages;
    }, 40 * kSecond);
    const dp::BridgeTraffic& bt = t.edge->worker->bridge_traffic(0);
    EXPECT_LE(max_buffered, dp::Worker::kMaxNorthQos0Bytes + payload.size() + 64);
    EXPECT_EQ(t.edge->cp->south().keepalive_timeouts, 0u);
    EXPECT_FALSE(t.dev->closed());
    if (!backpressure) {
      EXPECT_GT(bt.drop_queue_full.Get(), 0u) << "the uplink kept up: no test";
      EXPECT_EQ(t.edge->worker->stats().south_held_back.Get(), 0u);
      continue;
    }
    EXPECT_EQ(bt.drop_queue_full.Get(), 0u);
    EXPECT_GE(t.edge->worker->stats().south_held_back.Get(), 2u);
    const auto got = t.app->Publishes(t.a4);
    ASSERT_EQ(got.size(), size_t(kMessages));
    for (int i = 0; i < kMessages; ++i) {
      const std::string& body = got[size_t(i)].second;
      ASSERT_EQ(body.substr(0, body.find(' ')), std::to_string(i)) << "out of order or lost";
    }
  }
}

}  // namespace
}  // namespace qbridge::testing
