// South sessions through a whole appliance: authentication against the user file,
// takeover, and sessions that outlive their connection (clean start 0).
#include <gtest/gtest.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "controlplane/password.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/sim_mqtt_client.h"
#include "tests/support/sim_net.h"

namespace qbridge::testing {
namespace {

using mqtt::PacketType;
using quic::kSecond;

quic::Address Addr(const char* ip, uint16_t port) { return quic::Address::FromIpPort(ip, port); }
const quic::Address kServer = Addr("198.18.2.1", 14567);

dp::WorkerConfig Listener(const quic::TlsContext* tls) {
  dp::WorkerConfig w;
  w.server_tls = tls;
  w.endpoint.retry = quic::RetryMode::kOff;
  return w;
}

// The CONNACK a client got on its control stream.
std::optional<mqtt::Connack> Connack(SimMqttClient& c, mqtt::Version v = mqtt::Version::k5) {
  for (const auto& raw : c.Received(0)) {
    std::optional<mqtt::Connack> out;
    mqtt::Framer f;
    (void)f.Feed(raw, [&](const mqtt::Frame& fr) {
      mqtt::Packet p;
      if (fr.type() == PacketType::kConnack && mqtt::Decode(fr.header, fr.body, v, &p).ok())
        out = std::get<mqtt::Connack>(p);
      return true;
    });
    if (out) return out;
  }
  return std::nullopt;
}

void SendConnect(SimMqttClient& c, const char* id, bool clean, std::optional<std::string> user,
                 std::optional<std::string> pass, uint32_t expiry = 0) {
  mqtt::Connect m;
  m.client_id = id;
  m.clean_start = clean;
  m.keep_alive = 30;
  if (user) m.username = *user;
  if (pass) m.password = mqtt::Bytes(reinterpret_cast<const uint8_t*>(pass->data()), pass->size());
  if (expiry) m.properties.session_expiry_interval = expiry;
  EXPECT_EQ(c.Open(), 0);
  c.Send(0, m);
}

TEST(SessionsSim, UserFileAuthentication) {
  TestTls tls;
  SimNet net;
  auto hash = cp::HashPassword("s3cret");
  ASSERT_TRUE(hash.ok());
  auto users = cp::UserTable::Parse(absl::StrCat("dev:", *hash, "\n"), "users");
  ASSERT_TRUE(users.ok());
  cp::ControlplaneConfig cc;
  cc.south.users = *users;
  cc.south.allow_anonymous = false;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cc);
  SimMqttClient good(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  SimMqttClient bad(net, *tls.client, Addr("198.18.3.2", 1000), kServer);
  SimMqttClient anon(net, *tls.client, Addr("198.18.3.3", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return good.confirmed() && bad.confirmed() && anon.confirmed(); },
                           2 * kSecond));
  SendConnect(good, "g", true, "dev", "s3cret");
  SendConnect(bad, "b", true, "dev", "guess");
  SendConnect(anon, "a", true, std::nullopt, std::nullopt);
  ASSERT_TRUE(net.RunUntil([&] { return bad.closed() && anon.closed() && Connack(good); }, 5 * kSecond));
  ASSERT_TRUE(Connack(bad).has_value());
  ASSERT_TRUE(Connack(anon).has_value());
  EXPECT_EQ(Connack(good)->reason, mqtt::ReasonCode::kSuccess);
  EXPECT_EQ(Connack(bad)->reason, mqtt::ReasonCode::kBadUserNameOrPassword);
  EXPECT_EQ(Connack(anon)->reason, mqtt::ReasonCode::kNotAuthorized);
  EXPECT_EQ(bad.conn().peer_app_error(), 1u);
  EXPECT_EQ(cloud.cp->south().auth_failures, 2u);
  EXPECT_EQ(cloud.cp->sessions(), 1u);
}

// [mqtt] max_inflight: MQTT 5 clients are told the Receive Maximum in CONNACK, and one more
// unacknowledged QoS 1 PUBLISH than that (held for a bridge that is down, so its PUBACK
// waits) resets the data stream with 0x93, as EMQX does.
TEST(SessionsSim, ReceiveMaximumIsAnnouncedAndEnforced) {
  TestTls tls;
  SimNet net;
  cp::ControlplaneConfig cc;
  cc.south.receive_maximum = 2;
  cp::BridgeConfig b;  // an upstream that never answers: QoS 1 for it waits
  b.name = "away";
  b.client_id = "edge";
  b.version = mqtt::Version::k5;
  b.keepalive_s = 30;
  b.forwards.push_back(cp::BridgeForward{"t/#", "", mqtt::QoS::k1, false, "", "", 0});
  cc.bridges.push_back(b);
  dp::WorkerConfig w = Listener(tls.server.get());
  dp::BridgeDial d;
  d.local = kServer;
  d.remote = Addr("198.18.9.9", 14567);
  d.tls = tls.client.get();
  w.bridges.push_back(d);
  SimAppliance edge(net, kServer, w, cc);
  SimMqttClient dev(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return dev.confirmed(); }, 2 * kSecond));
  SendConnect(dev, "dev", true, std::nullopt, std::nullopt);
  ASSERT_TRUE(net.RunUntil([&] { return Connack(dev).has_value(); }, 2 * kSecond));
  EXPECT_EQ(Connack(dev)->properties.receive_maximum, std::optional<uint16_t>(2));
  const int64_t s4 = dev.Open();
  for (uint16_t i = 1; i <= 3; ++i) {
    mqtt::Publish p;
    p.topic = "t/x";
    p.qos = mqtt::QoS::k1;
    p.packet_id = i;
    dev.Send(s4, p);
  }
  ASSERT_TRUE(net.RunUntil([&] { return dev.events().reset.contains(s4); }, 2 * kSecond));
  EXPECT_EQ(dev.events().reset.at(s4), uint64_t(mqtt::ReasonCode::kReceiveMaximumExceeded));
}

TEST(SessionsSim, TakeoverTellsTheOldConnection0x8E) {
  TestTls tls;
  SimNet net;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient first(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return first.confirmed(); }, 2 * kSecond));
  SendConnect(first, "same", true, std::nullopt, std::nullopt);
  ASSERT_TRUE(net.RunUntil([&] { return Connack(first).has_value(); }, 2 * kSecond));
  const dp::ConnRef first_ref = cloud.cp->Session("same")->conn;
  SimMqttClient second(net, *tls.client, Addr("198.18.3.2", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return second.confirmed(); }, 2 * kSecond));
  SendConnect(second, "same", true, std::nullopt, std::nullopt);
  ASSERT_TRUE(net.RunUntil([&] { return first.closed() && Connack(second); }, 5 * kSecond));
  EXPECT_EQ(first.CountType(0, PacketType::kDisconnect), 1u);
  EXPECT_EQ(cloud.cp->south().takeovers, 1u);
  EXPECT_FALSE(cloud.cp->Session("same")->conn == first_ref);
  EXPECT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 1; }, 5 * kSecond));
  EXPECT_FALSE(second.closed());
}

// Clean start 0: the control stream's subscriptions outlive the connection and come back
// with session present; data-stream subscriptions do not (EMQX's model).
TEST(SessionsSim, PersistentSessionKeepsControlStreamSubscriptions) {
  TestTls tls;
  SimNet net;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cp::ControlplaneConfig{});
  auto c1 = std::make_unique<SimMqttClient>(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return c1->confirmed(); }, 2 * kSecond));
  SendConnect(*c1, "keeper", false, std::nullopt, std::nullopt, /*expiry=*/600);
  const int64_t d4 = c1->Open();
  mqtt::Subscribe on0, on4;
  on0.packet_id = 1;
  on0.subscriptions.push_back(mqtt::Subscription{"keep/#", mqtt::QoS::k1});
  on4.packet_id = 2;
  on4.subscriptions.push_back(mqtt::Subscription{"lose/#", mqtt::QoS::k1});
  c1->Send(0, on0);
  c1->Send(d4, on4);
  ASSERT_TRUE(net.RunUntil(
      [&] {
        return Connack(*c1) && cloud.cp->Session("keeper") &&
               cloud.cp->Session("keeper")->subscriptions == 2;
      },
      2 * kSecond));
  EXPECT_FALSE(Connack(*c1)->session_present);
  c1->Send(0, mqtt::Disconnect{});
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 0; }, 5 * kSecond));
  EXPECT_EQ(cloud.cp->offline_sessions(), 1u);

  SimMqttClient c2(net, *tls.client, Addr("198.18.3.1", 1001), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return c2.confirmed(); }, 2 * kSecond));
  SendConnect(c2, "keeper", false, std::nullopt, std::nullopt, 600);
  ASSERT_TRUE(net.RunUntil([&] { return Connack(c2).has_value(); }, 2 * kSecond));
  EXPECT_TRUE(Connack(c2)->session_present);
  EXPECT_EQ(cloud.cp->Session("keeper")->subscriptions, 1u);
  EXPECT_EQ(cloud.cp->south().sessions_resumed, 1u);
  // A publish to the kept filter arrives on the new control stream without a new SUBSCRIBE.
  SimMqttClient pub(net, *tls.client, Addr("198.18.3.9", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return pub.confirmed(); }, 2 * kSecond));
  SendConnect(pub, "pub", true, std::nullopt, std::nullopt);
  mqtt::Publish p;
  p.topic = "keep/a";
  static const uint8_t kBody[] = {'1'};
  p.payload = kBody;
  pub.Send(0, p);
  p.topic = "lose/a";
  pub.Send(0, p);
  ASSERT_TRUE(net.RunUntil([&] { return c2.Publishes(0).size() == 1; }, 2 * kSecond));
  net.RunUntil([] { return false; }, 100 * quic::kMillisecond);
  EXPECT_EQ(c2.Publishes(0).size(), 1u);
  EXPECT_EQ(c2.Publishes(0)[0].first, "keep/a");

  // Clean start 1 discards it.
  c2.Send(0, mqtt::Disconnect{});
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->offline_sessions() == 1 && cloud.cp->Session("keeper") == std::nullopt; },
                           5 * kSecond));
  SimMqttClient c3(net, *tls.client, Addr("198.18.3.1", 1002), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return c3.confirmed(); }, 2 * kSecond));
  SendConnect(c3, "keeper", true, std::nullopt, std::nullopt);
  ASSERT_TRUE(net.RunUntil([&] { return Connack(c3).has_value(); }, 2 * kSecond));
  EXPECT_FALSE(Connack(c3)->session_present);
  EXPECT_EQ(cloud.cp->Session("keeper")->subscriptions, 0u);
  EXPECT_EQ(cloud.cp->offline_sessions(), 0u);
}

// Offline queues: QoS 1 messages for a session that is away wait, up to max_mqueue_len,
// and arrive in order when it comes back; a clean start or the session's expiry drops them.
TEST(SessionsSim, OfflineQueueHoldsUpToItsCapAndEndsWithTheSession) {
  TestTls tls;
  SimNet net;
  cp::ControlplaneConfig cc;
  cc.south.max_mqueue_len = 3;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cc);
  SimMqttClient pub(net, *tls.client, Addr("198.18.3.9", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return pub.confirmed(); }, 2 * kSecond));
  SendConnect(pub, "pub", true, std::nullopt, std::nullopt);
  uint16_t next_id = 1;
  auto publish = [&](const char* body, mqtt::QoS qos) {
    mqtt::Publish p;
    p.topic = "keep/a";
    p.payload = mqtt::Bytes(reinterpret_cast<const uint8_t*>(body), std::strlen(body));
    p.qos = qos;
    if (qos != mqtt::QoS::k0) p.packet_id = next_id++;
    pub.Send(0, p);
  };
  // A persistent session with one control-stream subscription, then away. The clients stay
  // alive (the simulated network keeps polling them).
  std::vector<std::unique_ptr<SimMqttClient>> gone;
  auto away = [&](uint16_t port, uint32_t expiry) {
    auto& c = gone.emplace_back(
        std::make_unique<SimMqttClient>(net, *tls.client, Addr("198.18.3.1", port), kServer));
    EXPECT_TRUE(net.RunUntil([&] { return c->confirmed(); }, 2 * kSecond));
    SendConnect(*c, "keeper", false, std::nullopt, std::nullopt, expiry);
    mqtt::Subscribe sub;
    sub.packet_id = 1;
    sub.subscriptions.push_back(mqtt::Subscription{"keep/#", mqtt::QoS::k1});
    c->Send(0, sub);
    EXPECT_TRUE(net.RunUntil([&] { return cloud.cp->Session("keeper") && cloud.cp->Session("keeper")->subscriptions == 1; },
                             2 * kSecond));
    c->Send(0, mqtt::Disconnect{});
    EXPECT_TRUE(net.RunUntil([&] { return cloud.cp->offline_sessions() == 1 && cloud.cp->sessions() == 1; }, 5 * kSecond));
    net.RunUntil([] { return false; }, 50 * quic::kMillisecond);  // the offline route reaches the worker
  };
  away(1000, 600);
  for (const char* b : {"1", "2", "3", "4", "5"}) publish(b, mqtt::QoS::k1);
  publish("zero", mqtt::QoS::k0);  // QoS 0 does not wait
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->south().offline_queued + cloud.cp->south().offline_dropped == 5; },
                           2 * kSecond));
  EXPECT_EQ(cloud.cp->south().offline_queued, 3u);
  EXPECT_EQ(cloud.cp->south().offline_dropped, 2u);  // beyond max_mqueue_len

  SimMqttClient back(net, *tls.client, Addr("198.18.3.1", 1001), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return back.confirmed(); }, 2 * kSecond));
  SendConnect(back, "keeper", false, std::nullopt, std::nullopt, 600);
  ASSERT_TRUE(net.RunUntil([&] { return back.Publishes(0).size() == 3; }, 2 * kSecond));
  EXPECT_TRUE(Connack(back)->session_present);
  const auto got = back.Publishes(0);
  EXPECT_EQ(got[0], std::make_pair(std::string("keep/a"), std::string("1")));
  EXPECT_EQ(got[1].second, "2");
  EXPECT_EQ(got[2].second, "3");
  EXPECT_EQ(cloud.cp->south().offline_delivered, 3u);
  // Live again: the next one comes straight through.
  publish("6", mqtt::QoS::k1);
  ASSERT_TRUE(net.RunUntil([&] { return back.Publishes(0).size() == 4; }, 2 * kSecond));
  EXPECT_EQ(back.Publishes(0)[3].second, "6");
  EXPECT_EQ(cloud.cp->south().offline_queued, 3u);
  EXPECT_EQ(cloud.cp->south().offline_delivered, 3u);  // a live route, not through the controlplane
  EXPECT_EQ(cloud.worker->stats().routed_offline.Get(), 5u);  // 5 went to the controlplane; it kept 3

  // Away again; a clean start ends the session and what waited for it.
  back.Send(0, mqtt::Disconnect{});
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->offline_sessions() == 1 && cloud.cp->sessions() == 1; }, 5 * kSecond));
  net.RunUntil([] { return false; }, 50 * quic::kMillisecond);
  publish("7", mqtt::QoS::k1);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->south().offline_queued == 4; }, 2 * kSecond));
  SimMqttClient clean(net, *tls.client, Addr("198.18.3.1", 1002), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return clean.confirmed(); }, 2 * kSecond));
  SendConnect(clean, "keeper", true, std::nullopt, std::nullopt);
  ASSERT_TRUE(net.RunUntil([&] { return Connack(clean).has_value(); }, 2 * kSecond));
  EXPECT_FALSE(Connack(clean)->session_present);
  net.RunUntil([] { return false; }, 100 * quic::kMillisecond);
  EXPECT_TRUE(clean.Publishes(0).empty());
  EXPECT_EQ(cloud.cp->south().offline_dropped, 3u);
  clean.Send(0, mqtt::Disconnect{});
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 1; }, 5 * kSecond));

  // And the session's expiry drops what waited.
  away(1003, 2);
  publish("8", mqtt::QoS::k1);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->south().offline_queued == 5; }, 2 * kSecond));
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->offline_sessions() == 0; }, 3 * kSecond));
  EXPECT_EQ(cloud.cp->south().offline_dropped, 4u);
  // Nothing routes to it any more.
  publish("9", mqtt::QoS::k1);
  net.RunUntil([] { return false; }, 100 * quic::kMillisecond);
  EXPECT_EQ(cloud.cp->south().offline_queued, 5u);
  EXPECT_EQ(cloud.cp->south().offline_dropped, 4u);
}

// A session that begins closing (DISCONNECT) stops being a live route at once; what is
// published during its connection's linger queues for it rather than being lost.
TEST(SessionsSim, MessagesDuringTheCloseLingerQueue) {
  TestTls tls;
  SimNet net;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient c(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return c.confirmed(); }, 2 * kSecond));
  SendConnect(c, "linger", false, std::nullopt, std::nullopt, /*expiry=*/600);
  mqtt::Subscribe sub;
  sub.packet_id = 1;
  sub.subscriptions.push_back(mqtt::Subscription{"l/#", mqtt::QoS::k1});
  c.Send(0, sub);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->Session("linger") && cloud.cp->Session("linger")->subscriptions == 1; },
                           2 * kSecond));
  SimMqttClient pub(net, *tls.client, Addr("198.18.3.9", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return pub.confirmed(); }, 2 * kSecond));
  SendConnect(pub, "pub", true, std::nullopt, std::nullopt);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 2; }, 2 * kSecond));
  c.Send(0, mqtt::Disconnect{});
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->offline_sessions() == 1; }, 2 * kSecond));
  net.RunUntil([] { return false; }, 50 * quic::kMillisecond);  // the snapshot reaches the worker
  ASSERT_EQ(cloud.cp->sessions(), 2u) << "the connection still lingers";
  mqtt::Publish p;
  p.topic = "l/x";
  static const uint8_t kBody[] = {'x'};
  p.payload = kBody;
  p.qos = mqtt::QoS::k1;
  p.packet_id = 7;
  pub.Send(0, p);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->south().offline_queued == 1; }, 2 * kSecond));
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 1; }, 5 * kSecond));
  EXPECT_EQ(cloud.cp->offline_sessions(), 1u);  // stored once, not again at the close
  SimMqttClient back(net, *tls.client, Addr("198.18.3.1", 1001), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return back.confirmed(); }, 2 * kSecond));
  SendConnect(back, "linger", false, std::nullopt, std::nullopt, 600);
  ASSERT_TRUE(net.RunUntil([&] { return back.Publishes(0).size() == 1; }, 2 * kSecond));
  EXPECT_EQ(back.Publishes(0)[0].second, "x");
}

TEST(SessionsSim, OfflineSessionExpires) {
  TestTls tls;
  SimNet net;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient c(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return c.confirmed(); }, 2 * kSecond));
  SendConnect(c, "brief", false, std::nullopt, std::nullopt, /*expiry=*/5);
  ASSERT_TRUE(net.RunUntil([&] { return Connack(c).has_value(); }, 2 * kSecond));
  c.Send(0, mqtt::Disconnect{});
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->offline_sessions() == 1; }, 5 * kSecond));
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->offline_sessions() == 0; }, 6 * kSecond));
  EXPECT_EQ(cloud.cp->south().sessions_expired, 1u);
}

}  // namespace
}  // namespace qbridge::testing

namespace qbridge::testing {
namespace {

// The retain flag of the first PUBLISH on `stream`.
std::optional<bool> FirstRetain(SimMqttClient& c, int64_t stream) {
  for (const auto& raw : c.Received(stream)) {
    if ((raw[0] >> 4) == uint8_t(PacketType::kPublish)) return (raw[0] & 1) != 0;
  }
  return std::nullopt;
}

TEST(SessionsSim, RetainedMessagesReachLaterSubscribers) {
  TestTls tls;
  SimNet net;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient pub(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return pub.confirmed(); }, 2 * kSecond));
  pub.Connect("pub");
  mqtt::Publish p;
  p.topic = "state/door";
  static const uint8_t kOpen[] = {'o', 'p', 'e', 'n'};
  p.payload = kOpen;
  p.retain = true;
  pub.Send(0, p);
  p.topic = "state/gone";
  pub.Send(0, p);
  p.payload = {};  // an empty retained message clears the topic
  pub.Send(0, p);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->south().retained == 1; }, 2 * kSecond));

  SimMqttClient sub(net, *tls.client, Addr("198.18.3.2", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return sub.confirmed(); }, 2 * kSecond));
  sub.Connect("sub");
  const int64_t s4 = sub.Open();
  mqtt::Subscribe s;
  s.packet_id = 1;
  s.subscriptions.push_back(mqtt::Subscription{"state/#", mqtt::QoS::k1});
  sub.Send(s4, s);
  ASSERT_TRUE(net.RunUntil([&] { return sub.Publishes(s4).size() == 1; }, 2 * kSecond));
  EXPECT_EQ(sub.Publishes(s4)[0], (std::pair<std::string, std::string>{"state/door", "open"}));
  EXPECT_EQ(FirstRetain(sub, s4), true);
  net.RunUntil([] { return false; }, 100 * quic::kMillisecond);
  EXPECT_EQ(sub.Publishes(s4).size(), 1u);
  // Retain Handling 2: no retained messages for this subscription.
  const int64_t s8 = sub.Open();
  s.packet_id = 2;
  s.subscriptions[0].retain_handling = mqtt::RetainHandling::kDoNotSend;
  sub.Send(s8, s);
  ASSERT_TRUE(net.RunUntil([&] { return sub.CountType(s8, PacketType::kSuback) == 1; }, 2 * kSecond));
  net.RunUntil([] { return false; }, 100 * quic::kMillisecond);
  EXPECT_TRUE(sub.Publishes(s8).empty());
}

// Connects `watcher` and subscribes it to wills/# on its control stream.
::testing::AssertionResult WatchWills(SimNet& net, SimMqttClient& watcher) {
  if (!net.RunUntil([&] { return watcher.confirmed(); }, 2 * kSecond)) return ::testing::AssertionFailure() << "no handshake";
  watcher.Connect("watcher");
  mqtt::Subscribe s;
  s.packet_id = 1;
  s.subscriptions.push_back(mqtt::Subscription{"wills/#", mqtt::QoS::k0});
  watcher.Send(0, s);
  if (!net.RunUntil([&] { return watcher.CountType(0, PacketType::kSuback) == 1; }, 2 * kSecond))
    return ::testing::AssertionFailure() << "no SUBACK";
  return ::testing::AssertionSuccess();
}

TEST(SessionsSim, WillIsPublishedWhenTheConnectionDiesNotOnDisconnect) {
  TestTls tls;
  SimNet net;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient watcher(net, *tls.client, Addr("198.18.3.9", 1000), kServer);
  ASSERT_TRUE(WatchWills(net, watcher));

  auto connect_with_will = [&](SimMqttClient& c, const char* id) {
    mqtt::Connect m;
    m.client_id = id;
    m.keep_alive = 30;
    mqtt::Will w;
    w.topic = id[0] == 'l' ? "wills/lost" : "wills/polite";
    static const uint8_t kGone[] = {'g', 'o', 'n', 'e'};
    w.payload = kGone;
    m.will = w;
    EXPECT_EQ(c.Open(), 0);
    c.Send(0, m);
  };
  SimMqttClient lost(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  SimMqttClient polite(net, *tls.client, Addr("198.18.3.2", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return lost.confirmed() && polite.confirmed(); }, 2 * kSecond));
  connect_with_will(lost, "lost");
  connect_with_will(polite, "polite");
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 3; }, 2 * kSecond));
  polite.Send(0, mqtt::Disconnect{});  // normal: the will is cancelled
  lost.conn().Close(0);                 // the connection just ends: the will goes out
  ASSERT_TRUE(net.RunUntil([&] { return watcher.Publishes(0).size() == 1; }, 5 * kSecond));
  EXPECT_EQ(watcher.Publishes(0)[0], (std::pair<std::string, std::string>{"wills/lost", "gone"}));
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 1; }, 5 * kSecond));
  net.RunUntil([] { return false; }, 200 * quic::kMillisecond);
  EXPECT_EQ(watcher.Publishes(0).size(), 1u);
  EXPECT_EQ(cloud.cp->south().wills_published, 1u);
}

// MQTT 5 Will Delay Interval: a will waits out its delay (bounded by the session's expiry);
// a client that comes back to its session in time cancels it, one that does not has it
// published when the delay runs out.
TEST(SessionsSim, WillDelayIntervalWaitsAndIsCancelledByAReturn) {
  TestTls tls;
  SimNet net;
  SimAppliance cloud(net, kServer, Listener(tls.server.get()), cp::ControlplaneConfig{});
  SimMqttClient watcher(net, *tls.client, Addr("198.18.3.9", 1000), kServer);
  ASSERT_TRUE(WatchWills(net, watcher));

  static const uint8_t kGone[] = {'g', 'o', 'n', 'e'};
  auto connect = [&](SimMqttClient& c, const char* id, bool clean) {
    mqtt::Connect m;
    m.client_id = id;
    m.keep_alive = 30;
    m.clean_start = clean;
    m.properties.session_expiry_interval = 60;
    mqtt::Will w;
    w.topic = id[0] == 'b' ? "wills/back" : "wills/away";
    w.payload = kGone;
    w.properties.will_delay_interval = 3;
    m.will = w;
    EXPECT_EQ(c.Open(), 0);
    c.Send(0, m);
  };
  SimMqttClient back(net, *tls.client, Addr("198.18.3.1", 1000), kServer);
  SimMqttClient away(net, *tls.client, Addr("198.18.3.2", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return back.confirmed() && away.confirmed(); }, 2 * kSecond));
  connect(back, "back", true);
  connect(away, "away", true);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 3; }, 2 * kSecond));
  back.conn().Close(0);
  away.conn().Close(0);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 1; }, 2 * kSecond));
  net.RunUntil([] { return false; }, 1 * kSecond);
  EXPECT_TRUE(watcher.Publishes(0).empty()) << "a will went out before its delay";
  EXPECT_EQ(cloud.cp->south().wills_delayed, 2u);
  // "back" returns to its session within the delay.
  SimMqttClient back2(net, *tls.client, Addr("198.18.3.3", 1000), kServer);
  ASSERT_TRUE(net.RunUntil([&] { return back2.confirmed(); }, 2 * kSecond));
  connect(back2, "back", false);
  ASSERT_TRUE(net.RunUntil([&] { return cloud.cp->sessions() == 2; }, 2 * kSecond));
  ASSERT_TRUE(net.RunUntil([&] { return watcher.Publishes(0).size() == 1; }, 4 * kSecond));
  EXPECT_EQ(watcher.Publishes(0)[0], (std::pair<std::string, std::string>{"wills/away", "gone"}));
  net.RunUntil([] { return false; }, 4 * kSecond);
  EXPECT_EQ(watcher.Publishes(0).size(), 1u) << "the returning client's will was sent";
  EXPECT_EQ(cloud.cp->south().wills_cancelled, 1u);
  EXPECT_EQ(cloud.cp->south().wills_published, 1u);
}

}  // namespace
}  // namespace qbridge::testing
