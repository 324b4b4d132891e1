// MQTT 3.1, 3.1.1 and 5.0 packets: decoding with the spec's validation rules and the
// reason code each violation calls for, and encoding into caller buffers.
//
// Decoded packets are views: strings and payloads point into the bytes that were decoded
// (the framer's frame), so they are valid only as long as those bytes are. Nothing on the
// PUBLISH/ack path allocates; SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK fill vectors.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "mqtt/properties.h"
#include "mqtt/types.h"
#include "mqtt/wire.h"

namespace qbridge::mqtt {

// The largest packet the protocol can express: 1 fixed-header byte, 4 length bytes and
// 268,435,455 bytes of body.
inline constexpr uint32_t kMaxPacketSize = 1 + 4 + kMaxVarInt;

struct Will {
  QoS qos = QoS::k0;
  bool retain = false;
  std::string_view topic;
  Bytes payload;
  Properties properties;  // 5.0 only
};

struct Connect {
  Version version = Version::k5;
  bool bridge = false;  // 3.1/3.1.1 level byte carried 0x80
  bool clean_start = true;
  uint16_t keep_alive = 0;
  std::string_view client_id;
  std::optional<Will> will;
  std::optional<std::string_view> username;
  std::optional<Bytes> password;
  Properties properties;
};

struct Connack {
  bool session_present = false;
  ReasonCode reason = ReasonCode::kSuccess;  // 3.x return codes are mapped (FromV3ConnackCode)
  Properties properties;
};

struct Publish {
  bool dup = false;
  QoS qos = QoS::k0;
  bool retain = false;
  std::string_view topic;
  uint16_t packet_id = 0;  // QoS > 0 only
  Properties properties;
  Bytes payload;
};

// PUBACK, PUBREC, PUBREL and PUBCOMP share one layout.
struct PubAck {
  PacketType type = PacketType::kPuback;
  uint16_t packet_id = 0;
  ReasonCode reason = ReasonCode::kSuccess;
  Properties properties;
};

enum class RetainHandling : uint8_t { kSendAtSubscribe = 0, kSendIfNew = 1, kDoNotSend = 2 };

struct Subscription {
  std::string_view filter;
  QoS max_qos = QoS::k0;
  bool no_local = false;             // 5.0
  bool retain_as_published = false;  // 5.0
  RetainHandling retain_handling = RetainHandling::kSendAtSubscribe;  // 5.0
};

struct Subscribe {
  uint16_t packet_id = 0;
  Properties properties;
  std::vector<Subscription> subscriptions;
};

struct Suback {
  uint16_t packet_id = 0;
  Properties properties;
  std::vector<ReasonCode> reasons;  // 3.x: 0x00..0x02 granted QoS, 0x80 failure
};

struct Unsubscribe {
  uint16_t packet_id = 0;
  Properties properties;
  std::vector<std::string_view> filters;
};

struct Unsuback {
  uint16_t packet_id = 0;
  Properties properties;
  std::vector<ReasonCode> reasons;  // 5.0 only; empty for 3.x
};

struct Pingreq {};
struct Pingresp {};

struct Disconnect {
  ReasonCode reason = ReasonCode::kSuccess;
  Properties properties;
};

struct Auth {
  ReasonCode reason = ReasonCode::kSuccess;
  Properties properties;
};

using Packet = std::variant<Connect, Connack, Publish, PubAck, Subscribe, Suback, Unsubscribe,
                            Unsuback, Pingreq, Pingresp, Disconnect, Auth>;

PacketType TypeOf(const Packet& p);

// --- decoding --------------------------------------------------------------------------------

// Decodes one whole packet: `header` is the fixed header's first byte, `body` the bytes
// after the remaining length (as the Framer yields them). `version` is the connection's
// negotiated version; a CONNECT carries its own and ignores it.
CodecStatus Decode(uint8_t header, Bytes body, Version version, Packet* out);

// The hot-path entry points, without the variant.
CodecStatus DecodePublish(uint8_t header, Bytes body, Version version, Publish* out);
CodecStatus DecodePubAck(uint8_t header, Bytes body, Version version, PubAck* out);

// Reads the protocol level of a CONNECT body without decoding the rest, so a server can
// answer an unsupported version in the client's own format.
std::optional<Version> PeekConnectVersion(Bytes body);

// --- encoding --------------------------------------------------------------------------------

// Exact encoded size of `p` for `version`, or 0 when it cannot be encoded (a string over
// 65,535 bytes, a packet over kMaxPacketSize, a field the version cannot express).
size_t EncodedSize(const Packet& p, Version version);

// Encodes into `out`; returns the bytes written, or 0 if it cannot be encoded or `out` is
// smaller than EncodedSize().
size_t Encode(const Packet& p, Version version, std::span<uint8_t> out);

// Appends the encoding to `out`; false (and `out` unchanged) when it cannot be encoded.
bool EncodeTo(const Packet& p, Version version, std::vector<uint8_t>& out);

// Zero-copy PUBLISH: writes everything up to the payload (fixed header with the remaining
// length that includes the payload, topic, packet id, properties). The caller sends these
// bytes followed by `p.payload` from where it already lies. Returns 0 on failure.
inline constexpr size_t kMaxPublishHeaderOverhead = 1 + 4 + 2 + 2;  // plus topic and properties
size_t PublishHeaderSize(const Publish& p, Version version);
size_t EncodePublishHeader(const Publish& p, Version version, std::span<uint8_t> out);

}  // namespace qbridge::mqtt
