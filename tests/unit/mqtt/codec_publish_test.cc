// The codec on PUBLISH and its acks (PUBACK, PUBREC, PUBREL, PUBCOMP).
#include "mqtt/codec.h"

#include <gtest/gtest.h>

#include "tests/unit/mqtt/codec_test_util.h"

namespace qbridge::mqtt {
namespace {

// --- PUBLISH ---------------------------------------------------------------------------------

TEST(Publish, DecodesQos1AndViewsPayloadInPlace) {
  const auto bytes = Hex("32 0a 00 03 'a/b' 00 07 'hey'");
  Packet p;
  ASSERT_TRUE(DecodeOne(bytes, Version::k311, &p).ok());
  const auto& pub = std::get<Publish>(p);
  EXPECT_EQ(pub.qos, QoS::k1);
  EXPECT_FALSE(pub.dup);
  EXPECT_FALSE(pub.retain);
  EXPECT_EQ(pub.topic, "a/b");
  EXPECT_EQ(pub.packet_id, 7);
  EXPECT_EQ(AsStringView(pub.payload), "hey");
  EXPECT_EQ(pub.payload.data(), bytes.data() + 9);  // no copy
}

TEST(Publish, ReusedOutputCarriesNothingOver) {
  // A stream decodes every PUBLISH into one reused struct: a property of the previous
  // packet must neither leak into the next nor make it look duplicated.
  const auto a = Hex("00 01 'a' 05 02 00 00 00 0a 'x'");
  const auto b = Hex("00 01 'b' 00 'y'");
  Publish out;
  ASSERT_TRUE(DecodePublish(0x30, a, Version::k5, &out).ok());
  EXPECT_EQ(out.properties.message_expiry_interval, 10u);
  ASSERT_TRUE(DecodePublish(0x30, a, Version::k5, &out).ok());
  ASSERT_TRUE(DecodePublish(0x30, b, Version::k5, &out).ok());
  EXPECT_FALSE(out.properties.message_expiry_interval);
  EXPECT_EQ(AsStringView(out.payload), "y");
  PubAck ack;
  const auto r = Hex("00 01 97 00");
  ASSERT_TRUE(DecodePubAck(0x40, r, Version::k5, &ack).ok());
  EXPECT_EQ(ack.reason, ReasonCode::kQuotaExceeded);
  const auto plain = Hex("00 02");
  ASSERT_TRUE(DecodePubAck(0x40, plain, Version::k5, &ack).ok());
  EXPECT_EQ(ack.reason, ReasonCode::kSuccess);
}

TEST(Publish, FixedHeaderFlags) {
  EXPECT_EQ(Err(0x36, "00 01 'a' 00 01", Version::k311), ReasonCode::kMalformedPacket);  // QoS 3
  EXPECT_EQ(Err(0x38, "00 01 'a'", Version::k311), ReasonCode::kMalformedPacket);  // DUP, QoS 0
  EXPECT_EQ(Err(0x3d, "00 01 'a' 00 01", Version::k311), ReasonCode::kSuccess);  // DUP QoS2 retain
}

TEST(Publish, TopicRules) {
  EXPECT_EQ(Err(0x30, "00 03 'a/+'", Version::k311), ReasonCode::kTopicNameInvalid);
  EXPECT_EQ(Err(0x30, "00 03 'a/#'", Version::k5), ReasonCode::kTopicNameInvalid);
  EXPECT_EQ(Err(0x30, "00 00", Version::k311), ReasonCode::kTopicNameInvalid);
  EXPECT_EQ(Err(0x30, "00 00 00", Version::k5), ReasonCode::kProtocolError);  // no alias
  EXPECT_EQ(Err(0x30, "00 00 03 23 00 02 'x'", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x30, "00 02 'a' 00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x30, "00 05 'a'", Version::k311), ReasonCode::kMalformedPacket);
}

TEST(Publish, PacketIdentifierZeroIsAProtocolError) {
  EXPECT_EQ(Err(0x32, "00 01 'a' 00 00", Version::k311), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x34, "00 01 'a' 00 00 00", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x32, "00 01 'a' 00", Version::k311), ReasonCode::kMalformedPacket);
}

TEST(Publish, V5PropertyRules) {
  // Subscription identifiers may repeat in PUBLISH (a server forwarding to overlapping
  // subscriptions); topic alias may not.
  Packet p;
  const auto bytes = Hex("30 09 00 01 'a' 04 0b 01 0b 02 'x'");
  ASSERT_TRUE(DecodeOne(bytes, Version::k5, &p).ok());
  std::vector<uint32_t> ids;
  std::get<Publish>(p).properties.subscription_ids.ForEach([&](const uint32_t& v) { ids.push_back(v); });
  EXPECT_EQ(ids, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(Err(0x30, "00 01 'a' 06 23 00 01 23 00 02", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x30, "00 01 'a' 02 0b 00", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x30, "00 01 'a' 02 01 02", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x30, "00 01 'a' 05 11 00 00 00 01", Version::k5), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x30, "00 01 'a' 04 08 00 01 '#'", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x30, "00 01 'a' 05 03 00 02 c3 28", Version::k5), ReasonCode::kMalformedPacket);
}

TEST(Publish, RoundTripsInEveryVersionAndQos) {
  const StringPair user[] = {{"k", "v"}};
  const uint32_t sub_ids[] = {7, 300000};
  for (Version v : kAllVersions) {
    for (QoS q : {QoS::k0, QoS::k1, QoS::k2}) {
      Publish pub;
      pub.qos = q;
      pub.retain = true;
      pub.dup = q != QoS::k0;
      pub.topic = "site/1/temp";
      pub.packet_id = q == QoS::k0 ? 0 : 65535;
      pub.payload = AsBytes("21.5");
      if (v == Version::k5) {
        pub.properties.payload_format_indicator = 1;
        pub.properties.message_expiry_interval = 10;
        pub.properties.topic_alias = 3;
        pub.properties.response_topic = "reply/1";
        pub.properties.correlation_data = AsBytes("c1");
        pub.properties.content_type = "text/plain";
        pub.properties.user_properties = UserProperties(user);
        pub.properties.subscription_ids = SubscriptionIds(sub_ids);
      }
      std::vector<uint8_t> storage;
      const auto back = std::get<Publish>(RoundTrip(pub, v, &storage));
      EXPECT_EQ(back.qos, q);
      EXPECT_EQ(back.dup, pub.dup);
      EXPECT_TRUE(back.retain);
      EXPECT_EQ(back.packet_id, pub.packet_id);
      EXPECT_EQ(AsStringView(back.payload), "21.5");
    }
  }
}

TEST(Publish, HeaderEncodingPlusPayloadEqualsFullEncoding) {
  std::vector<uint8_t> payload(1000, 0xAB);
  Publish pub;
  pub.qos = QoS::k1;
  pub.packet_id = 9;
  pub.topic = "t";
  pub.payload = payload;
  pub.properties.message_expiry_interval = 5;
  for (Version v : kAllVersions) {
    std::vector<uint8_t> hdr(PublishHeaderSize(pub, v));
    ASSERT_EQ(EncodePublishHeader(pub, v, hdr), hdr.size());
    hdr.insert(hdr.end(), payload.begin(), payload.end());
    EXPECT_EQ(hdr, Enc(pub, v));
  }
}

TEST(Publish, EncodeRefusesWhatCannotBeExpressed) {
  Publish pub;
  pub.qos = QoS::k1;  // packet id 0
  pub.topic = "t";
  EXPECT_EQ(EncodedSize(pub, Version::k311), 0u);
  pub.packet_id = 1;
  const std::string long_topic(65536, 'a');
  pub.topic = long_topic;
  EXPECT_EQ(EncodedSize(pub, Version::k311), 0u);
  std::vector<uint8_t> out(10);
  pub.topic = "t";
  EXPECT_EQ(Encode(pub, Version::k311, out), 7u);
  std::vector<uint8_t> small(3);
  EXPECT_EQ(Encode(pub, Version::k311, small), 0u);
}

TEST(Publish, DupIsClearedAtQos0) {
  Publish p;
  p.topic = "t";
  p.dup = true;  // e.g. a resent QoS 1 message forwarded at QoS 0
  const auto bytes = Enc(p, Version::k311);
  EXPECT_EQ(bytes[0], 0x30);
  Packet back;
  EXPECT_TRUE(DecodeOne(bytes, Version::k311, &back).ok());
}

TEST(Publish, EncodeRefusesWhatOurDecoderWouldReject) {
  Publish p;
  p.topic = "a/+";
  EXPECT_EQ(EncodedSize(p, Version::k311), 0u);  // wildcard
  p.topic = "";
  EXPECT_EQ(EncodedSize(p, Version::k311), 0u);  // empty in 3.x
  EXPECT_EQ(EncodedSize(p, Version::k5), 0u);    // empty without alias
  p.properties.topic_alias = 2;
  EXPECT_NE(EncodedSize(p, Version::k5), 0u);
  p.topic = "t";
  p.properties.topic_alias = 0;
  EXPECT_EQ(EncodedSize(p, Version::k5), 0u);  // alias 0
  p.properties.topic_alias.reset();
  const uint32_t too_big[] = {kMaxVarInt + 1};
  p.properties.subscription_ids = SubscriptionIds(too_big);
  EXPECT_EQ(EncodedSize(p, Version::k5), 0u);  // would need a 5-byte VarInt
  std::vector<uint8_t> roomy(64);
  EXPECT_EQ(Encode(p, Version::k5, roomy), 0u);
  EXPECT_EQ(EncodePublishHeader(p, Version::k5, roomy), 0u);
  p.properties.subscription_ids = {};
  const std::string long_type(65536, 'x');
  p.properties.content_type = long_type;
  EXPECT_EQ(EncodedSize(p, Version::k5), 0u);  // property string over 65,535 bytes
  EXPECT_EQ(PublishHeaderSize(p, Version::k5), 0u);
  p.properties.content_type.reset();
  p.properties.session_expiry_interval = 5;  // not a PUBLISH property
  EXPECT_EQ(EncodedSize(p, Version::k5), 0u);
}

TEST(Publish, TopicAliasZeroIsTopicAliasInvalid) {
  EXPECT_EQ(Err(0x30, "00 01 'a' 03 23 00 00", Version::k5), ReasonCode::kTopicAliasInvalid);
}

// --- PUBACK / PUBREC / PUBREL / PUBCOMP --------------------------------------------------------

TEST(PubAck, V3AcksAreExactlyTwoBytes) {
  Packet p;
  ASSERT_TRUE(DecodeOne(Hex("40 02 00 05"), Version::k311, &p).ok());
  EXPECT_EQ(std::get<PubAck>(p).packet_id, 5);
  EXPECT_EQ(Err(0x40, "00 05 00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x40, "00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x40, "00 00", Version::k311), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x60, "00 01", Version::k311), ReasonCode::kMalformedPacket);  // PUBREL flags
  EXPECT_EQ(Err(0x62, "00 01", Version::k311), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x72, "00 01", Version::k311), ReasonCode::kMalformedPacket);  // PUBCOMP flags
}

TEST(PubAck, V5ShortFormsAndReasonCodes) {
  Packet p;
  ASSERT_TRUE(DecodeOne(Hex("50 03 00 05 10"), Version::k5, &p).ok());
  EXPECT_EQ(std::get<PubAck>(p).reason, ReasonCode::kNoMatchingSubscribers);
  EXPECT_EQ(std::get<PubAck>(p).type, PacketType::kPubrec);
  EXPECT_EQ(Err(0x62, "00 01 10", Version::k5), ReasonCode::kMalformedPacket);  // 0x10 on PUBREL
  EXPECT_EQ(Err(0x62, "00 01 92", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x40, "00 01 92", Version::k5), ReasonCode::kMalformedPacket);  // 0x92 on PUBACK
  EXPECT_EQ(Err(0x40, "00 01 00 03 1f 00 00", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x40, "00 01 00 03 26 00 00", Version::k5), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x40, "00 01 00 02 01 00", Version::k5), ReasonCode::kMalformedPacket);

  PubAck a;
  a.type = PacketType::kPuback;
  a.packet_id = 1;
  EXPECT_EQ(Enc(a, Version::k5), Hex("40 02 00 01"));
  a.reason = ReasonCode::kQuotaExceeded;
  EXPECT_EQ(Enc(a, Version::k5), Hex("40 03 00 01 97"));
  a.properties.reason_string = "full";
  std::vector<uint8_t> storage;
  const auto back = std::get<PubAck>(RoundTrip(a, Version::k5, &storage));
  EXPECT_EQ(back.properties.reason_string, "full");
}

TEST(Encode, RefusesListsAndCodesOurDecoderWouldReject) {
  Suback s;
  s.packet_id = 1;
  EXPECT_EQ(EncodedSize(s, Version::k311), 0u);  // no reason codes
  s.reasons = {ReasonCode::kPacketIdentifierNotFound};
  EXPECT_EQ(EncodedSize(s, Version::k5), 0u);  // not a SUBACK code
  Unsuback u;
  u.packet_id = 1;
  EXPECT_EQ(EncodedSize(u, Version::k5), 0u);
  EXPECT_NE(EncodedSize(u, Version::k311), 0u);  // 3.x UNSUBACK has no list
  PubAck a;
  a.type = PacketType::kPubrel;
  a.packet_id = 1;
  a.reason = ReasonCode::kNoMatchingSubscribers;  // PUBACK/PUBREC only
  EXPECT_EQ(EncodedSize(a, Version::k5), 0u);
  a.type = PacketType::kPuback;
  a.reason = ReasonCode::kSuccess;
  a.properties.topic_alias = 1;  // not an ack property
  EXPECT_EQ(EncodedSize(a, Version::k5), 0u);
  Auth auth;
  auth.reason = ReasonCode::kContinueAuthentication;  // without a method
  EXPECT_EQ(EncodedSize(auth, Version::k5), 0u);
  Subscribe sub;
  sub.packet_id = 1;
  sub.subscriptions.push_back({"a", QoS::k0});
  const uint32_t two_ids[] = {1, 2};
  sub.properties.subscription_ids = SubscriptionIds(two_ids);
  EXPECT_EQ(EncodedSize(sub, Version::k5), 0u);  // only PUBLISH may repeat it
}

TEST(PubAck, V3RefusesToEncodeAFailure) {
  PubAck a;
  a.packet_id = 3;
  a.reason = ReasonCode::kNotAuthorized;
  EXPECT_EQ(EncodedSize(a, Version::k311), 0u);  // 3.x cannot say no: never ack it
}

TEST(PubAck, RoundTripsEveryType) {
  for (Version v : kAllVersions) {
    for (PacketType t : {PacketType::kPuback, PacketType::kPubrec, PacketType::kPubrel,
                         PacketType::kPubcomp}) {
      PubAck a;
      a.type = t;
      a.packet_id = 42;
      std::vector<uint8_t> storage;
      const auto back = std::get<PubAck>(RoundTrip(a, v, &storage));
      EXPECT_EQ(back.type, t);
      EXPECT_EQ(back.packet_id, 42);
      EXPECT_EQ(storage[0] & 0x0F, t == PacketType::kPubrel ? 2 : 0);
    }
  }
}

}  // namespace
}  // namespace qbridge::mqtt
