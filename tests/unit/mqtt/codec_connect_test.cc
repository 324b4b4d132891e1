// The codec on CONNECT and CONNACK, in every protocol version.
#include "mqtt/codec.h"

#include <gtest/gtest.h>

#include "tests/unit/mqtt/codec_test_util.h"

namespace qbridge::mqtt {
namespace {

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

}  // namespace
}  // namespace qbridge::mqtt
