// The codec on SUBSCRIBE, UNSUBSCRIBE and their acks, PINGREQ, PINGRESP, DISCONNECT, AUTH,
// and reason codes. CONNECT/CONNACK and PUBLISH and its acks have files of their own.
#include "mqtt/codec.h"

#include <gtest/gtest.h>

#include "tests/unit/mqtt/codec_test_util.h"

namespace qbridge::mqtt {
namespace {

// --- SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK -----------------------------------------------

TEST(Subscribe, DecodesV5Options) {
  Packet p;  // views into `bytes`, which must outlive it
  const auto bytes = Hex("82 0f 00 0a 02 0b 05 00 03 'a/+' 2e 00 01 'b' 00");
  ASSERT_TRUE(DecodeOne(bytes, Version::k5, &p).ok());
  const auto& s = std::get<Subscribe>(p);
  EXPECT_EQ(s.packet_id, 10);
  ASSERT_EQ(s.subscriptions.size(), 2u);
  EXPECT_EQ(s.subscriptions[0].filter, "a/+");
  EXPECT_EQ(s.subscriptions[0].max_qos, QoS::k2);
  EXPECT_TRUE(s.subscriptions[0].no_local);
  EXPECT_TRUE(s.subscriptions[0].retain_as_published);
  EXPECT_EQ(s.subscriptions[0].retain_handling, RetainHandling::kDoNotSend);
  std::vector<uint32_t> ids;
  s.properties.subscription_ids.ForEach([&](const uint32_t& v) { ids.push_back(v); });
  EXPECT_EQ(ids, std::vector<uint32_t>{5});
}

TEST(Subscribe, Violations) {
  EXPECT_EQ(Err(0x80, "00 01 00 01 'a' 00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x82, "00 01", Version::k311), ReasonCode::kProtocolError);  // no filters
  EXPECT_EQ(Err(0x82, "00 01 00", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x82, "00 00 00 01 'a' 00", Version::k311), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x82, "00 01 00 01 'a' 04", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x82, "00 01 00 01 'a' 03", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x82, "00 01 00 00 01 'a' 40", Version::k5), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x82, "00 01 00 00 01 'a' 30", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x82, "00 01 00 00 0a '$share/g/a' 04", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x82, "00 01 02 0b 00 00 01 'a' 00", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x82, "00 01 04 0b 01 0b 02 00 01 'a' 00", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x82, "00 01 00 00 01 'a'", Version::k5), ReasonCode::kMalformedPacket);
}

TEST(Subscribe, RoundTripsEveryVersion) {
  for (Version v : kAllVersions) {
    Subscribe s;
    s.packet_id = 7;
    s.subscriptions.push_back({"a/#", QoS::k1, false, false, RetainHandling::kSendAtSubscribe});
    s.subscriptions.push_back({"$share/g/b/+", QoS::k2, false, v == Version::k5,
                               v == Version::k5 ? RetainHandling::kSendIfNew
                                                : RetainHandling::kSendAtSubscribe});
    std::vector<uint8_t> storage;
    const auto back = std::get<Subscribe>(RoundTrip(s, v, &storage));
    ASSERT_EQ(back.subscriptions.size(), 2u);
    EXPECT_EQ(back.subscriptions[1].filter, "$share/g/b/+");
    EXPECT_EQ(back.subscriptions[1].max_qos, QoS::k2);
  }
}

TEST(Suback, ReasonCodesPerVersion) {
  EXPECT_EQ(Err(0x90, "00 01 00 01 02 80", Version::k311), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x90, "00 01 03", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x90, "00 01 00 8f 9e a2", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x90, "00 01 00 92", Version::k5), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x90, "00 01", Version::k311), ReasonCode::kProtocolError);
  Suback s;
  s.packet_id = 2;
  s.reasons = {ReasonCode::kGrantedQos1, ReasonCode::kTopicFilterInvalid};
  EXPECT_EQ(Enc(s, Version::k311), Hex("90 04 00 02 01 80"));  // 3.x has one failure code
  std::vector<uint8_t> storage;
  EXPECT_EQ(std::get<Suback>(RoundTrip(s, Version::k5, &storage)).reasons, s.reasons);
}

TEST(Unsubscribe, RoundTripsAndValidates) {
  for (Version v : kAllVersions) {
    Unsubscribe u;
    u.packet_id = 3;
    u.filters = {"a/+", "b/#"};
    std::vector<uint8_t> storage;
    EXPECT_EQ(std::get<Unsubscribe>(RoundTrip(u, v, &storage)).filters, u.filters);
  }
  EXPECT_EQ(Err(0xa2, "00 01", Version::k311), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0xa0, "00 01 00 01 'a'", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0xa2, "00 01 00 00 01 ff", Version::k5), ReasonCode::kMalformedPacket);
}

TEST(Unsuback, VersionForms) {
  EXPECT_EQ(Err(0xb0, "00 01", Version::k311), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0xb0, "00 01 00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0xb0, "00 01 00 00 11", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0xb0, "00 01 00 01", Version::k5), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0xb0, "00 01 00", Version::k5), ReasonCode::kProtocolError);
  Unsuback u;
  u.packet_id = 4;
  u.reasons = {ReasonCode::kSuccess, ReasonCode::kNoSubscriptionExisted};
  std::vector<uint8_t> storage;
  EXPECT_EQ(std::get<Unsuback>(RoundTrip(u, Version::k5, &storage)).reasons, u.reasons);
  EXPECT_EQ(Enc(u, Version::k311), Hex("b0 02 00 04"));
}

// --- PINGREQ, PINGRESP, DISCONNECT, AUTH -------------------------------------------------------

TEST(Ping, HasNoBody) {
  EXPECT_EQ(Enc(Pingreq{}, Version::k311), Hex("c0 00"));
  EXPECT_EQ(Enc(Pingresp{}, Version::k5), Hex("d0 00"));
  EXPECT_EQ(Err(0xc0, "00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0xc1, "", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0xd0, "00", Version::k5), ReasonCode::kMalformedPacket);
}

TEST(Disconnect, Forms) {
  EXPECT_EQ(Err(0xe0, "", Version::k311), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0xe0, "00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0xe0, "8d", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0xe0, "18", Version::k5), ReasonCode::kMalformedPacket);  // AUTH-only code
  EXPECT_EQ(Err(0xe0, "00 03 21 00 01", Version::k5), ReasonCode::kMalformedPacket);
  Disconnect d;
  EXPECT_EQ(Enc(d, Version::k5), Hex("e0 00"));
  d.reason = ReasonCode::kKeepAliveTimeout;
  EXPECT_EQ(Enc(d, Version::k5), Hex("e0 01 8d"));
  EXPECT_EQ(Enc(d, Version::k311), Hex("e0 00"));
  d.properties.session_expiry_interval = 0;
  d.properties.server_reference = "b:1883";
  std::vector<uint8_t> storage;
  const auto back = std::get<Disconnect>(RoundTrip(d, Version::k5, &storage));
  EXPECT_EQ(back.reason, ReasonCode::kKeepAliveTimeout);
  EXPECT_EQ(back.properties.server_reference, "b:1883");
}

TEST(Auth, V5Only) {
  EXPECT_EQ(Err(0xf0, "", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0xf0, "", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0xf0, "18 00", Version::k5), ReasonCode::kProtocolError);  // no method
  EXPECT_EQ(Err(0xf0, "87", Version::k5), ReasonCode::kMalformedPacket);
  Auth a;
  a.reason = ReasonCode::kContinueAuthentication;
  a.properties.authentication_method = "SCRAM-SHA-1";
  a.properties.authentication_data = AsBytes("nonce");
  std::vector<uint8_t> storage;
  const auto back = std::get<Auth>(RoundTrip(a, Version::k5, &storage));
  EXPECT_EQ(back.properties.authentication_method, "SCRAM-SHA-1");
  EXPECT_EQ(EncodedSize(a, Version::k311), 0u);
}

TEST(Decode, ReservedPacketType) {
  EXPECT_EQ(Err(0x00, "", Version::k5), ReasonCode::kMalformedPacket);
}

// --- reason codes ----------------------------------------------------------------------------

TEST(ReasonCodes, TableMatchesSpec) {
  EXPECT_TRUE(ReasonCodeAllowed(PacketType::kConnack, ReasonCode::kBanned));
  EXPECT_FALSE(ReasonCodeAllowed(PacketType::kDisconnect, ReasonCode::kBanned));
  EXPECT_TRUE(ReasonCodeAllowed(PacketType::kDisconnect, ReasonCode::kKeepAliveTimeout));
  EXPECT_TRUE(ReasonCodeAllowed(PacketType::kSuback, ReasonCode::kGrantedQos2));
  EXPECT_FALSE(ReasonCodeAllowed(PacketType::kPuback, ReasonCode::kGrantedQos2));
  EXPECT_TRUE(ReasonCodeAllowed(PacketType::kPubcomp, ReasonCode::kPacketIdentifierNotFound));
  EXPECT_FALSE(ReasonCodeAllowed(PacketType::kConnack, static_cast<ReasonCode>(0x03)));
  EXPECT_EQ(ReasonCodeName(ReasonCode::kKeepAliveTimeout), "Keep Alive timeout");
  EXPECT_EQ(ReasonCodeName(static_cast<ReasonCode>(0x42)), "Unknown reason code");
  EXPECT_EQ(PacketTypeName(PacketType::kPingreq), "PINGREQ");
}

}  // namespace
}  // namespace qbridge::mqtt
