// MQTT 5.0 properties (spec 2.2.2): every identifier, its data type, the packets it may
// appear in, and a decoded view that points into the received bytes (no copies).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mqtt/types.h"
#include "mqtt/wire.h"

namespace qbridge::mqtt {

enum class PropertyId : uint8_t {
  kPayloadFormatIndicator = 0x01,
  kMessageExpiryInterval = 0x02,
  kContentType = 0x03,
  kResponseTopic = 0x08,
  kCorrelationData = 0x09,
  kSubscriptionIdentifier = 0x0B,
  kSessionExpiryInterval = 0x11,
  kAssignedClientIdentifier = 0x12,
  kServerKeepAlive = 0x13,
  kAuthenticationMethod = 0x15,
  kAuthenticationData = 0x16,
  kRequestProblemInformation = 0x17,
  kWillDelayInterval = 0x18,
  kRequestResponseInformation = 0x19,
  kResponseInformation = 0x1A,
  kServerReference = 0x1C,
  kReasonString = 0x1F,
  kReceiveMaximum = 0x21,
  kTopicAliasMaximum = 0x22,
  kTopicAlias = 0x23,
  kMaximumQos = 0x24,
  kRetainAvailable = 0x25,
  kUserProperty = 0x26,
  kMaximumPacketSize = 0x27,
  kWildcardSubscriptionAvailable = 0x28,
  kSubscriptionIdentifierAvailable = 0x29,
  kSharedSubscriptionAvailable = 0x2A,
};

// Where a property block sits: a packet type, or the Will Properties inside CONNECT.
enum class PropertyScope : uint8_t {
  kConnect, kConnack, kPublish, kWill, kPuback, kPubrec, kPubrel, kPubcomp,
  kSubscribe, kSuback, kUnsubscribe, kUnsuback, kDisconnect, kAuth,
};
PropertyScope ScopeOf(PacketType t);

// Whether property `id` may appear in `scope` (spec 2.2.2.2 table 2-4). False for unknown ids.
bool PropertyAllowed(PropertyId id, PropertyScope scope);

struct StringPair {
  std::string_view key;
  std::string_view value;
};

// A repeated property (User Property, Subscription Identifier). A decoded one views the
// validated property block it came from; one built for encoding views caller storage.
// Neither owns memory, so a decoded packet costs no allocation however many it carries.
template <typename T>
class RepeatedProperty {
 public:
  RepeatedProperty() = default;
  // Views caller storage, which must outlive every use (encoding happens later).
  explicit RepeatedProperty(std::span<const T> items) : items_(items), count_(items.size()) {}
  // A temporary container would dangle at once.
  explicit RepeatedProperty(std::vector<T>&&) = delete;
  static RepeatedProperty FromWire(Bytes block, uint32_t count) {
    RepeatedProperty r;
    r.block_ = block;
    r.count_ = count;
    return r;
  }

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }

  // Calls fn(const T&) for each element, in wire order.
  template <typename Fn>
  void ForEach(Fn&& fn) const;

 private:
  std::span<const T> items_;
  Bytes block_;  // the whole property block when decoded
  size_t count_ = 0;
};
using UserProperties = RepeatedProperty<StringPair>;
using SubscriptionIds = RepeatedProperty<uint32_t>;

struct Properties {
  std::optional<uint8_t> payload_format_indicator;
  std::optional<uint32_t> message_expiry_interval;
  std::optional<std::string_view> content_type;
  std::optional<std::string_view> response_topic;
  std::optional<Bytes> correlation_data;
  std::optional<uint32_t> session_expiry_interval;
  std::optional<std::string_view> assigned_client_identifier;
  std::optional<uint16_t> server_keep_alive;
  std::optional<std::string_view> authentication_method;
  std::optional<Bytes> authentication_data;
  std::optional<uint8_t> request_problem_information;
  std::optional<uint32_t> will_delay_interval;
  std::optional<uint8_t> request_response_information;
  std::optional<std::string_view> response_information;
  std::optional<std::string_view> server_reference;
  std::optional<std::string_view> reason_string;
  std::optional<uint16_t> receive_maximum;
  std::optional<uint16_t> topic_alias_maximum;
  std::optional<uint16_t> topic_alias;
  std::optional<uint8_t> maximum_qos;
  std::optional<uint8_t> retain_available;
  std::optional<uint32_t> maximum_packet_size;
  std::optional<uint8_t> wildcard_subscription_available;
  std::optional<uint8_t> subscription_identifier_available;
  std::optional<uint8_t> shared_subscription_available;
  SubscriptionIds subscription_ids;
  UserProperties user_properties;
};

// Outcome of a decode step: kSuccess, or the reason code the receiver must answer with
// (Malformed Packet, Protocol Error, ...) and a static description for logs and tests.
struct CodecStatus {
  ReasonCode code = ReasonCode::kSuccess;
  const char* detail = "";
  bool ok() const { return code == ReasonCode::kSuccess; }
};
inline CodecStatus Malformed(const char* detail) { return {ReasonCode::kMalformedPacket, detail}; }
inline CodecStatus ProtocolError(const char* detail) { return {ReasonCode::kProtocolError, detail}; }

// Decodes a property block (its length prefix first) at the reader's position.
CodecStatus DecodeProperties(Reader& r, PropertyScope scope, Properties* out);

// Whether `p` can be encoded in `scope`: every property allowed there, strings and binary
// data within 65,535 bytes, values in range (no Subscription Identifier 0 or above
// 268,435,455, no Receive Maximum, Topic Alias or Maximum Packet Size 0, flags 0 or 1).
bool PropertiesEncodable(const Properties& p, PropertyScope scope);
// The same check, also giving the block's size with its length prefix (one pass).
bool CheckedPropertiesSize(const Properties& p, PropertyScope scope, size_t* size);

// Size of the property block without and with its length prefix.
size_t PropertiesBodySize(const Properties& p);
inline size_t PropertiesSize(const Properties& p) {
  const size_t body = PropertiesBodySize(p);
  return VarIntSize(uint32_t(body)) + body;
}
void EncodeProperties(const Properties& p, Writer& w);

// --- implementation of RepeatedProperty::ForEach -------------------------------------------

namespace internal {
// Walks a validated property block, calling fn(id, reader positioned at the value); fn
// must consume the value. Defined in properties.cc for the two repeated types.
void ForEachUserProperty(Bytes block, void (*fn)(void*, const StringPair&), void* ctx);
void ForEachSubscriptionId(Bytes block, void (*fn)(void*, const uint32_t&), void* ctx);
}  // namespace internal

template <typename T>
template <typename Fn>
void RepeatedProperty<T>::ForEach(Fn&& fn) const {
  if (!items_.empty()) {
    for (const T& item : items_) fn(item);
    return;
  }
  if (count_ == 0) return;
  using F = std::remove_reference_t<Fn>;
  auto thunk = [](void* ctx, const T& item) { (*static_cast<F*>(ctx))(item); };
  if constexpr (std::is_same_v<T, StringPair>) {
    internal::ForEachUserProperty(block_, thunk, &fn);
  } else {
    internal::ForEachSubscriptionId(block_, thunk, &fn);
  }
}

}  // namespace qbridge::mqtt
