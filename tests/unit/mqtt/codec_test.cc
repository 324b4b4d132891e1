#include "mqtt/codec.h"

#include <gtest/gtest.h>

#include "mqtt/framer.h"
#include "tests/support/bytes.h"

namespace qbridge::mqtt {
namespace {

using qbridge::testing::Hex;

// Decodes exactly one packet from `bytes` through the framer, as a stream would.
CodecStatus DecodeOne(const std::vector<uint8_t>& bytes, Version v, Packet* out) {
  Framer framer;
  CodecStatus status = Malformed("no frame");
  int frames = 0;
  const CodecStatus fs = framer.Feed(bytes, [&](const Frame& f) {
    ++frames;
    status = Decode(f.header, f.body, v, out);
    return true;
  });
  if (!fs.ok()) return fs;
  EXPECT_EQ(frames, 1);
  EXPECT_EQ(framer.buffered(), 0u);
  return status;
}

// Decodes a body given as hex under a fixed-header byte; returns the reason code.
ReasonCode Err(uint8_t header, const char* body_hex, Version v) {
  const auto body = Hex(body_hex);
  Packet p;
  return Decode(header, body, v, &p).code;
}

std::vector<uint8_t> Enc(const Packet& p, Version v) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(EncodeTo(p, v, out)) << PacketTypeName(TypeOf(p));
  return out;
}

// Encode, decode, encode again: both encodings must be identical, and the size
// prediction exact.
Packet RoundTrip(const Packet& p, Version v, std::vector<uint8_t>* storage) {
  *storage = Enc(p, v);
  EXPECT_EQ(EncodedSize(p, v), storage->size());
  // Encoding into a roomier buffer must write exactly the predicted bytes too.
  std::vector<uint8_t> roomy(storage->size() + 64, 0xEE);
  EXPECT_EQ(Encode(p, v, roomy), storage->size());
  EXPECT_TRUE(std::equal(storage->begin(), storage->end(), roomy.begin()));
  Packet back;
  const CodecStatus s = DecodeOne(*storage, v, &back);
  EXPECT_TRUE(s.ok()) << s.detail;
  EXPECT_EQ(Enc(back, v), *storage);
  return back;
}

constexpr Version kAllVersions[] = {Version::k31, Version::k311, Version::k5};

// --- CONNECT ---------------------------------------------------------------------------------

TEST(Connect, DecodesMinimal311) {
  const auto bytes = Hex("10 0d 00 04 'MQTT' 04 02 00 3c 00 01 'c'");
  Packet p;
  ASSERT_TRUE(DecodeOne(bytes, Version::k311, &p).ok());
  const auto& c = std::get<Connect>(p);
  EXPECT_EQ(c.version, Version::k311);
  EXPECT_FALSE(c.bridge);
  EXPECT_TRUE(c.clean_start);
  EXPECT_EQ(c.keep_alive, 60);
  EXPECT_EQ(c.client_id, "c");
  EXPECT_FALSE(c.will);
  EXPECT_FALSE(c.username);
  EXPECT_FALSE(c.password);
}

TEST(Connect, Decodes31WithMqisdp) {
  const auto bytes = Hex("10 0f 00 06 'MQIsdp' 03 02 00 0a 00 01 'x'");
  Packet p;
  ASSERT_TRUE(DecodeOne(bytes, Version::k311, &p).ok());
  EXPECT_EQ(std::get<Connect>(p).version, Version::k31);
}

TEST(Connect, AcceptsNanomqBridgeBit) {
  const auto bytes = Hex("10 0d 00 04 'MQTT' 84 02 00 3c 00 01 'b'");
  Packet p;
  ASSERT_TRUE(DecodeOne(bytes, Version::k311, &p).ok());
  const auto& c = std::get<Connect>(p);
  EXPECT_EQ(c.version, Version::k311);
  EXPECT_TRUE(c.bridge);
  EXPECT_EQ(Enc(p, Version::k311), bytes);  // the bit survives re-encoding
  EXPECT_EQ(PeekConnectVersion(Hex("00 04 'MQTT' 84")), Version::k311);
}

TEST(Connect, RejectsUnsupportedVersions) {
  // Protocol level 6, a bridge bit on 5.0, a wrong name, a 3.1 name with level 4.
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 06 02 00 3c 00 01 'c'", Version::k5),
            ReasonCode::kUnsupportedProtocolVersion);
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 85 02 00 3c 00 00 01 'c'", Version::k5),
            ReasonCode::kUnsupportedProtocolVersion);
  EXPECT_EQ(Err(0x10, "00 04 'MQTX' 04 02 00 3c 00 01 'c'", Version::k5),
            ReasonCode::kUnsupportedProtocolVersion);
  EXPECT_EQ(Err(0x10, "00 06 'MQIsdp' 04 02 00 3c 00 01 'c'", Version::k5),
            ReasonCode::kUnsupportedProtocolVersion);
  EXPECT_EQ(PeekConnectVersion(Hex("00 04 'MQTT' 07")), std::nullopt);
}

TEST(Connect, RejectsBadFlags) {
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 03 00 3c 00 01 'c'", Version::k311),
            ReasonCode::kMalformedPacket);  // reserved bit 0
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 1e 00 3c 00 01 'c' 00 01 't' 00 00", Version::k311),
            ReasonCode::kMalformedPacket);  // will QoS 3
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 0a 00 3c 00 01 'c'", Version::k311),
            ReasonCode::kMalformedPacket);  // will QoS without will flag
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 22 00 3c 00 01 'c'", Version::k311),
            ReasonCode::kMalformedPacket);  // will retain without will flag
  EXPECT_EQ(Err(0x11, "00 04 'MQTT' 04 02 00 3c 00 01 'c'", Version::k311),
            ReasonCode::kMalformedPacket);  // fixed-header flags
}

TEST(Connect, PasswordWithoutUserNameIsVersionDependent) {
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 42 00 3c 00 01 'c' 00 02 'pw'", Version::k311),
            ReasonCode::kMalformedPacket);
  const auto v5 = Hex("10 12 00 04 'MQTT' 05 42 00 3c 00 00 01 'c' 00 02 'pw'");
  Packet p;
  ASSERT_TRUE(DecodeOne(v5, Version::k5, &p).ok());
  const auto& c = std::get<Connect>(p);
  EXPECT_FALSE(c.username);
  ASSERT_TRUE(c.password);
  EXPECT_EQ(AsStringView(*c.password), "pw");
}

TEST(Connect, ClientIdentifierRules) {
  // 3.1.1: empty id needs clean session; 3.1 needs an id; 5.0 lets the server assign one.
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 00 00 3c 00 00", Version::k311),
            ReasonCode::kClientIdentifierNotValid);
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 02 00 3c 00 00", Version::k311), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x10, "00 06 'MQIsdp' 03 02 00 3c 00 00", Version::k31),
            ReasonCode::kClientIdentifierNotValid);
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 00 00 3c 00 00 00", Version::k5), ReasonCode::kSuccess);
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 02 00 3c 00 02 'a' 00", Version::k311),
            ReasonCode::kMalformedPacket);  // U+0000 in the id
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 02 00 3c 00 02 c0 80", Version::k311),
            ReasonCode::kMalformedPacket);  // overlong UTF-8
}

TEST(Connect, WillTopicMustBeATopicName) {
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 06 00 3c 00 01 'c' 00 03 'a/#' 00 00", Version::k311),
            ReasonCode::kTopicNameInvalid);
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 06 00 3c 00 01 'c' 00 00 00 00", Version::k311),
            ReasonCode::kTopicNameInvalid);
}

TEST(Connect, RejectsTruncationAndTrailingBytes) {
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 02 00", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 02 00 3c 00 01 'c' ff", Version::k311),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 04 c2 00 3c 00 01 'c' 00 01 'u'", Version::k311),
            ReasonCode::kMalformedPacket);  // password flag, no password
}

TEST(Connect, V5PropertiesAreValidated) {
  // receive maximum 0
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 03 21 00 00 00 01 'c'", Version::k5),
            ReasonCode::kProtocolError);
  // session expiry twice
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 0a 11 00 00 00 01 11 00 00 00 02 00 01 'c'",
                Version::k5),
            ReasonCode::kProtocolError);
  // topic alias is not a CONNECT property
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 03 23 00 01 00 01 'c'", Version::k5),
            ReasonCode::kMalformedPacket);
  // unknown identifier 0x05
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 02 05 00 00 01 'c'", Version::k5),
            ReasonCode::kMalformedPacket);
  // authentication data without method
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 04 16 00 01 'x' 00 01 'c'", Version::k5),
            ReasonCode::kProtocolError);
  // request problem information 2
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 02 17 02 00 01 'c'", Version::k5),
            ReasonCode::kProtocolError);
  // property length beyond the packet
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 20 11 00", Version::k5),
            ReasonCode::kMalformedPacket);
  // maximum packet size 0
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 05 27 00 00 00 00 00 01 'c'", Version::k5),
            ReasonCode::kProtocolError);
  // will property in the CONNECT block
  EXPECT_EQ(Err(0x10, "00 04 'MQTT' 05 02 00 3c 05 18 00 00 00 05 00 01 'c'", Version::k5),
            ReasonCode::kMalformedPacket);
}

TEST(Connect, FullV5RoundTrip) {
  const StringPair user[] = {{"site", "north-1"}, {"rack", "7"}};
  Connect c;
  c.version = Version::k5;
  c.clean_start = false;
  c.keep_alive = 30;
  c.client_id = "bridge-1";
  c.username = "u";
  const std::vector<uint8_t> pw = {0, 1, 2};
  c.password = Bytes(pw);
  c.properties.session_expiry_interval = 3600;
  c.properties.receive_maximum = 32;
  c.properties.maximum_packet_size = 1 << 20;
  c.properties.topic_alias_maximum = 10;
  c.properties.request_response_information = 1;
  c.properties.request_problem_information = 0;
  c.properties.authentication_method = "SCRAM-SHA-256";
  const std::vector<uint8_t> auth = {9, 9};
  c.properties.authentication_data = Bytes(auth);
  c.properties.user_properties = UserProperties(user);
  Will& w = c.will.emplace();
  w.qos = QoS::k1;
  w.retain = true;
  w.topic = "bridges/bridge-1/status";
  w.payload = AsBytes("offline");
  w.properties.will_delay_interval = 5;
  w.properties.payload_format_indicator = 1;
  w.properties.message_expiry_interval = 60;
  w.properties.content_type = "text/plain";
  w.properties.response_topic = "r/1";
  w.properties.correlation_data = AsBytes("id");

  std::vector<uint8_t> storage;
  const Packet back = RoundTrip(c, Version::k5, &storage);
  const auto& d = std::get<Connect>(back);
  EXPECT_EQ(d.client_id, "bridge-1");
  EXPECT_FALSE(d.clean_start);
  EXPECT_EQ(d.properties.session_expiry_interval, 3600u);
  EXPECT_EQ(d.properties.receive_maximum, 32);
  ASSERT_TRUE(d.will);
  EXPECT_EQ(d.will->qos, QoS::k1);
  EXPECT_TRUE(d.will->retain);
  EXPECT_EQ(d.will->properties.will_delay_interval, 5u);
  EXPECT_EQ(d.will->properties.content_type, "text/plain");
  EXPECT_EQ(AsStringView(d.will->payload), "offline");
  std::vector<std::pair<std::string, std::string>> seen;
  d.properties.user_properties.ForEach(
      [&](const StringPair& kv) { seen.emplace_back(std::string(kv.key), std::string(kv.value)); });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(std::string("site"), std::string("north-1")));
  EXPECT_EQ(seen[1], std::make_pair(std::string("rack"), std::string("7")));
}

TEST(Connect, RoundTripsInEveryVersion) {
  for (Version v : kAllVersions) {
    Connect c;
    c.version = v;
    c.client_id = "dev-42";
    c.keep_alive = 10;
    c.username = "user";
    c.password = AsBytes("secret");
    c.bridge = v != Version::k5;
    Will& w = c.will.emplace();
    w.qos = QoS::k2;
    w.topic = "lwt";
    w.payload = AsBytes("gone");
    std::vector<uint8_t> storage;
    const Packet back = RoundTrip(c, v, &storage);
    EXPECT_EQ(std::get<Connect>(back).version, v);
  }
}

// --- CONNACK ---------------------------------------------------------------------------------

TEST(Connack, DecodesV3ReturnCodes) {
  Packet p;
  ASSERT_TRUE(DecodeOne(Hex("20 02 01 00"), Version::k311, &p).ok());
  EXPECT_TRUE(std::get<Connack>(p).session_present);
  ASSERT_TRUE(DecodeOne(Hex("20 02 00 05"), Version::k311, &p).ok());
  EXPECT_EQ(std::get<Connack>(p).reason, ReasonCode::kNotAuthorized);
  EXPECT_EQ(Err(0x20, "00 06", Version::k311), ReasonCode::kMalformedPacket);
  EXPECT_EQ(Err(0x20, "02 00", Version::k311), ReasonCode::kMalformedPacket);  // reserved flag
  EXPECT_EQ(Err(0x20, "00 00 00", Version::k311), ReasonCode::kMalformedPacket);
  // 3.1 had no session-present flag; the byte is ignored.
  ASSERT_TRUE(DecodeOne(Hex("20 02 ff 00"), Version::k31, &p).ok());
  EXPECT_FALSE(std::get<Connack>(p).session_present);
}

TEST(Connack, V5RoundTripWithServerProperties) {
  Connack c;
  c.session_present = true;
  c.properties.assigned_client_identifier = "auto-1";
  c.properties.server_keep_alive = 20;
  c.properties.receive_maximum = 10;
  c.properties.maximum_qos = 1;
  c.properties.retain_available = 0;
  c.properties.maximum_packet_size = 65536;
  c.properties.topic_alias_maximum = 0;
  c.properties.wildcard_subscription_available = 1;
  c.properties.subscription_identifier_available = 0;
  c.properties.shared_subscription_available = 1;
  c.properties.response_information = "resp/";
  c.properties.server_reference = "other:1883";
  c.properties.reason_string = "welcome";
  std::vector<uint8_t> storage;
  const auto back = std::get<Connack>(RoundTrip(c, Version::k5, &storage));
  EXPECT_TRUE(back.session_present);
  EXPECT_EQ(back.properties.server_keep_alive, 20);
  EXPECT_EQ(back.properties.assigned_client_identifier, "auto-1");
  EXPECT_EQ(back.properties.maximum_qos, 1);
}

TEST(Connack, V5RejectsInvalidValues) {
  EXPECT_EQ(Err(0x20, "00 10 00", Version::k5), ReasonCode::kMalformedPacket);  // 0x10 not CONNACK
  EXPECT_EQ(Err(0x20, "00 00 02 24 02", Version::k5), ReasonCode::kProtocolError);  // max QoS 2
  EXPECT_EQ(Err(0x20, "00 00 02 25 05", Version::k5), ReasonCode::kProtocolError);
  EXPECT_EQ(Err(0x20, "00 00 02 17 01", Version::k5), ReasonCode::kMalformedPacket);
}

TEST(Connack, RefusalNeverClaimsASession) {
  Connack c;
  c.session_present = true;
  c.reason = ReasonCode::kNotAuthorized;
  EXPECT_EQ(Enc(c, Version::k311), Hex("20 02 00 05"));
  EXPECT_EQ(Enc(c, Version::k5), Hex("20 03 00 87 00"));
  c.reason = ReasonCode::kKeepAliveTimeout;  // a DISCONNECT-only code
  EXPECT_EQ(EncodedSize(c, Version::k5), 0u);
}

TEST(Connack, V3MapsReasonCodes) {
  Connack c;
  c.reason = ReasonCode::kBadUserNameOrPassword;
  EXPECT_EQ(Enc(c, Version::k311), Hex("20 02 00 04"));
  c.reason = ReasonCode::kUnsupportedProtocolVersion;
  EXPECT_EQ(Enc(c, Version::k311), Hex("20 02 00 01"));
  c.reason = ReasonCode::kQuotaExceeded;  // no 3.x equivalent
  EXPECT_EQ(Enc(c, Version::k311), Hex("20 02 00 03"));
}

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
