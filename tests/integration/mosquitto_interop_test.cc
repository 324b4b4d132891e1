// Interop against a real broker: mosquitto on a loopback port, driven only through
// qbridge's codec over a TCP socket. Every ack and every payload byte is checked, and the
// acks are driven by qbridge's own QoS state machines.
#include <gtest/gtest.h>

#include <string>

#include "mqtt/codec.h"
#include "mqtt/qos.h"
#include "tests/support/mqtt_tcp_client.h"

namespace qbridge::mqtt {
namespace {

using qbridge::testing::MosquittoBroker;
using qbridge::testing::MqttTcpClient;
using qbridge::testing::OwnedPacket;

constexpr absl::Duration kTimeout = absl::Seconds(5);
constexpr uint32_t kSubId[] = {42};

// A payload with every byte value, a U+0000 and a length that needs a 2-byte remaining
// length, so nothing is accidentally treated as text.
std::vector<uint8_t> BinaryPayload(size_t n, uint8_t seed) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = uint8_t(i * 31 + seed);
  return p;
}

class MosquittoInterop : public ::testing::TestWithParam<Version> {
 protected:
  void SetUp() override {
    if (!MosquittoBroker::Available()) GTEST_SKIP() << "mosquitto not installed: run tools/setup.sh";
    auto b = MosquittoBroker::Start();
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }

  std::unique_ptr<MqttTcpClient> ConnectClient(const std::string& id,
                                               const Will* will = nullptr) {
    auto c = MqttTcpClient::Dial("127.0.0.1", broker_->port(), kTimeout);
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return nullptr;
    (*c)->set_version(GetParam());
    Connect conn;
    conn.version = GetParam();
    conn.client_id = id;
    conn.keep_alive = 30;
    if (GetParam() == Version::k5) conn.properties.receive_maximum = 16;
    if (will) conn.will = *will;
    EXPECT_TRUE((*c)->Send(conn).ok());
    auto ack = (*c)->Receive(kTimeout);
    EXPECT_TRUE(ack.ok()) << ack.status();
    if (!ack.ok()) return nullptr;
    const auto* connack = std::get_if<Connack>(&ack->packet);
    EXPECT_NE(connack, nullptr);
    if (!connack) return nullptr;
    EXPECT_EQ(connack->reason, ReasonCode::kSuccess);
    EXPECT_FALSE(connack->session_present);
    return std::move(*c);
  }

  OwnedPacket Next(MqttTcpClient& c) {
    auto p = c.Receive(kTimeout);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : OwnedPacket{};
  }

  std::unique_ptr<MosquittoBroker> broker_;
};

TEST_P(MosquittoInterop, SubscribePublishAllQosLevels) {
  auto sub = ConnectClient("qb-sub");
  auto pub = ConnectClient("qb-pub");
  ASSERT_TRUE(sub && pub);

  // SUBSCRIBE at QoS 2 so each message arrives at the QoS it was published with.
  Subscribe s;
  s.packet_id = 1;
  s.subscriptions.push_back({"qb/test/#", QoS::k2});
  if (GetParam() == Version::k5) s.properties.subscription_ids = SubscriptionIds(kSubId);
  ASSERT_TRUE(sub->Send(s).ok());
  {
    const OwnedPacket ack = Next(*sub);
    const auto* suback = std::get_if<Suback>(&ack.packet);
    ASSERT_NE(suback, nullptr);
    EXPECT_EQ(suback->packet_id, 1);
    EXPECT_EQ(suback->reasons, std::vector<ReasonCode>{ReasonCode::kGrantedQos2});
  }

  OutboundQos<int> sender(65535);
  InboundQos receiver(16);
  for (QoS qos : {QoS::k0, QoS::k1, QoS::k2}) {
    SCOPED_TRACE(int(qos));
    const auto payload = BinaryPayload(1000 + static_cast<int>(qos), uint8_t(qos));
    const std::string topic = "qb/test/q" + std::to_string(int(qos));
    Publish p;
    p.qos = qos;
    p.topic = topic;
    p.payload = payload;
    if (qos != QoS::k0) {
      auto id = sender.Start(qos, int(qos));
      ASSERT_TRUE(id);
      p.packet_id = *id;
    }
    ASSERT_TRUE(pub->Send(p).ok());

    // Publisher side: PUBACK, or PUBREC -> PUBREL -> PUBCOMP.
    if (qos != QoS::k0) {
      OwnedPacket a = Next(*pub);
      auto* ack = std::get_if<PubAck>(&a.packet);
      ASSERT_NE(ack, nullptr);
      EXPECT_EQ(ack->packet_id, p.packet_id);
      EXPECT_EQ(ack->reason, ReasonCode::kSuccess);
      int done = -1;
      if (qos == QoS::k1) {
        EXPECT_EQ(ack->type, PacketType::kPuback);
        EXPECT_EQ(sender.OnPuback(ack->packet_id, &done), AckOutcome::kCompleted);
      } else {
        EXPECT_EQ(ack->type, PacketType::kPubrec);
        ASSERT_EQ(sender.OnPubrec(ack->packet_id, ack->reason, &done), AckOutcome::kSendPubrel);
        PubAck rel;
        rel.type = PacketType::kPubrel;
        rel.packet_id = p.packet_id;
        ASSERT_TRUE(pub->Send(rel).ok());
        OwnedPacket c = Next(*pub);
        auto* comp = std::get_if<PubAck>(&c.packet);
        ASSERT_NE(comp, nullptr);
        EXPECT_EQ(comp->type, PacketType::kPubcomp);
        EXPECT_EQ(sender.OnPubcomp(comp->packet_id, &done), AckOutcome::kCompleted);
      }
      EXPECT_EQ(done, int(qos));
    }

    // Subscriber side: the message, byte for byte, then its acks.
    OwnedPacket m = Next(*sub);
    auto* got = std::get_if<Publish>(&m.packet);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->topic, topic);
    EXPECT_EQ(got->qos, qos);
    EXPECT_FALSE(got->retain);
    EXPECT_EQ(std::vector<uint8_t>(got->payload.begin(), got->payload.end()), payload);
    if (GetParam() == Version::k5) {
      std::vector<uint32_t> ids;
      got->properties.subscription_ids.ForEach([&](const uint32_t& v) { ids.push_back(v); });
      EXPECT_EQ(ids, std::vector<uint32_t>{kSubId[0]});
    }
    ASSERT_EQ(receiver.OnPublish(0, qos, got->packet_id).kind, InboundDecision::kDeliver);
    if (qos == QoS::k0) continue;
    PubAck ack;
    ack.type = qos == QoS::k1 ? PacketType::kPuback : PacketType::kPubrec;
    ack.packet_id = got->packet_id;
    ASSERT_TRUE(sub->Send(ack).ok());
    EXPECT_TRUE(receiver.OnAckSent(0, got->packet_id));
    if (qos == QoS::k2) {
      OwnedPacket r = Next(*sub);
      auto* rel = std::get_if<PubAck>(&r.packet);
      ASSERT_NE(rel, nullptr);
      EXPECT_EQ(rel->type, PacketType::kPubrel);
      EXPECT_EQ(rel->packet_id, got->packet_id);
      EXPECT_EQ(receiver.OnPubrel(0, rel->packet_id), ReasonCode::kSuccess);
      PubAck comp;
      comp.type = PacketType::kPubcomp;
      comp.packet_id = rel->packet_id;
      ASSERT_TRUE(sub->Send(comp).ok());
    }
  }
  EXPECT_EQ(sender.inflight(), 0u);
  EXPECT_EQ(receiver.pending(), 0u);

  // UNSUBSCRIBE, then PINGREQ/PINGRESP proves the session is still healthy.
  Unsubscribe u;
  u.packet_id = 2;
  u.filters = {"qb/test/#"};
  ASSERT_TRUE(sub->Send(u).ok());
  {
    OwnedPacket a = Next(*sub);
    auto* unsuback = std::get_if<Unsuback>(&a.packet);
    ASSERT_NE(unsuback, nullptr);
    EXPECT_EQ(unsuback->packet_id, 2);
    if (GetParam() == Version::k5) {
      EXPECT_EQ(unsuback->reasons, std::vector<ReasonCode>{ReasonCode::kSuccess});
    }
  }
  ASSERT_TRUE(sub->Send(Pingreq{}).ok());
  EXPECT_TRUE(std::holds_alternative<Pingresp>(Next(*sub).packet));
  ASSERT_TRUE(sub->Send(Disconnect{}).ok());
  ASSERT_TRUE(pub->Send(Disconnect{}).ok());
}

TEST_P(MosquittoInterop, RetainedMessageAndWill) {
  auto a = ConnectClient("qb-retain");
  ASSERT_TRUE(a);
  const auto payload = BinaryPayload(300, 7);
  Publish p;
  p.qos = QoS::k1;
  p.packet_id = 10;
  p.retain = true;
  p.topic = "qb/retained";
  p.payload = payload;
  ASSERT_TRUE(a->Send(p).ok());
  EXPECT_TRUE(std::holds_alternative<PubAck>(Next(*a).packet));

  auto b = ConnectClient("qb-late");
  ASSERT_TRUE(b);
  Subscribe s;
  s.packet_id = 3;
  s.subscriptions.push_back({"qb/retained", QoS::k0});
  s.subscriptions.push_back({"qb/will", QoS::k1});
  ASSERT_TRUE(b->Send(s).ok());
  EXPECT_TRUE(std::holds_alternative<Suback>(Next(*b).packet));
  {
    OwnedPacket m = Next(*b);
    auto* got = std::get_if<Publish>(&m.packet);
    ASSERT_NE(got, nullptr);
    EXPECT_TRUE(got->retain);
    EXPECT_EQ(got->qos, QoS::k0);
    EXPECT_EQ(std::vector<uint8_t>(got->payload.begin(), got->payload.end()), payload);
  }

  // A client with a will drops its TCP connection without DISCONNECT: the broker
  // publishes the will, which proves our CONNECT's will fields were read as sent.
  Will w;
  w.qos = QoS::k1;
  w.topic = "qb/will";
  w.payload = AsBytes("bridge lost");
  if (GetParam() == Version::k5) w.properties.content_type = "text/plain";
  auto c = ConnectClient("qb-will", &w);
  ASSERT_TRUE(c);
  c.reset();
  OwnedPacket m = Next(*b);
  auto* got = std::get_if<Publish>(&m.packet);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->topic, "qb/will");
  EXPECT_EQ(got->qos, QoS::k1);
  EXPECT_EQ(AsStringView(got->payload), "bridge lost");
  if (GetParam() == Version::k5) {
    EXPECT_EQ(got->properties.content_type, "text/plain");
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, MosquittoInterop,
                         ::testing::Values(Version::k31, Version::k311, Version::k5),
                         [](const auto& info) {
                           switch (info.param) {
                             case Version::k31: return std::string("v31");
                             case Version::k311: return std::string("v311");
                             case Version::k5: return std::string("v5");
                           }
                           return std::string("unknown");
                         });

}  // namespace
}  // namespace qbridge::mqtt
