#include "mqtt/properties.h"

#include <algorithm>

#include "mqtt/topic.h"

namespace qbridge::mqtt {
namespace {

enum class DataType : uint8_t { kNone, kByte, kTwoByte, kFourByte, kVarInt, kString, kBinary, kPair };

constexpr uint32_t S(PropertyScope s) { return 1u << static_cast<unsigned>(s); }
using PS = PropertyScope;

struct PropInfo {
  DataType type;
  uint32_t scopes;
};

constexpr uint32_t kAllScopes = (1u << (static_cast<unsigned>(PS::kAuth) + 1)) - 1;
constexpr uint32_t kPubWill = S(PS::kPublish) | S(PS::kWill);
constexpr uint32_t kReasonStringScopes = S(PS::kConnack) | S(PS::kPuback) | S(PS::kPubrec) |
                                         S(PS::kPubrel) | S(PS::kPubcomp) | S(PS::kSuback) |
                                         S(PS::kUnsuback) | S(PS::kDisconnect) | S(PS::kAuth);

// Spec 2.2.2.2, table 2-4.
constexpr PropInfo Info(uint8_t id) {
  switch (static_cast<PropertyId>(id)) {
    case PropertyId::kPayloadFormatIndicator: return {DataType::kByte, kPubWill};
    case PropertyId::kMessageExpiryInterval: return {DataType::kFourByte, kPubWill};
    case PropertyId::kContentType: return {DataType::kString, kPubWill};
    case PropertyId::kResponseTopic: return {DataType::kString, kPubWill};
    case PropertyId::kCorrelationData: return {DataType::kBinary, kPubWill};
    case PropertyId::kSubscriptionIdentifier:
      return {DataType::kVarInt, S(PS::kPublish) | S(PS::kSubscribe)};
    case PropertyId::kSessionExpiryInterval:
      return {DataType::kFourByte, S(PS::kConnect) | S(PS::kConnack) | S(PS::kDisconnect)};
    case PropertyId::kAssignedClientIdentifier: return {DataType::kString, S(PS::kConnack)};
    case PropertyId::kServerKeepAlive: return {DataType::kTwoByte, S(PS::kConnack)};
    case PropertyId::kAuthenticationMethod:
      return {DataType::kString, S(PS::kConnect) | S(PS::kConnack) | S(PS::kAuth)};
    case PropertyId::kAuthenticationData:
      return {DataType::kBinary, S(PS::kConnect) | S(PS::kConnack) | S(PS::kAuth)};
    case PropertyId::kRequestProblemInformation: return {DataType::kByte, S(PS::kConnect)};
    case PropertyId::kWillDelayInterval: return {DataType::kFourByte, S(PS::kWill)};
    case PropertyId::kRequestResponseInformation: return {DataType::kByte, S(PS::kConnect)};
    case PropertyId::kResponseInformation: return {DataType::kString, S(PS::kConnack)};
    case PropertyId::kServerReference:
      return {DataType::kString, S(PS::kConnack) | S(PS::kDisconnect)};
    case PropertyId::kReasonString: return {DataType::kString, kReasonStringScopes};
    case PropertyId::kReceiveMaximum:
      return {DataType::kTwoByte, S(PS::kConnect) | S(PS::kConnack)};
    case PropertyId::kTopicAliasMaximum:
      return {DataType::kTwoByte, S(PS::kConnect) | S(PS::kConnack)};
    case PropertyId::kTopicAlias: return {DataType::kTwoByte, S(PS::kPublish)};
    case PropertyId::kMaximumQos: return {DataType::kByte, S(PS::kConnack)};
    case PropertyId::kRetainAvailable: return {DataType::kByte, S(PS::kConnack)};
    case PropertyId::kUserProperty: return {DataType::kPair, kAllScopes};
    case PropertyId::kMaximumPacketSize:
      return {DataType::kFourByte, S(PS::kConnect) | S(PS::kConnack)};
    case PropertyId::kWildcardSubscriptionAvailable: return {DataType::kByte, S(PS::kConnack)};
    case PropertyId::kSubscriptionIdentifierAvailable: return {DataType::kByte, S(PS::kConnack)};
    case PropertyId::kSharedSubscriptionAvailable: return {DataType::kByte, S(PS::kConnack)};
  }
  return {DataType::kNone, 0};
}

// Stores v into an optional slot; a second occurrence is a Protocol Error (spec 2.2.2.2).
template <typename T, typename V>
bool SetOnce(std::optional<T>& slot, V v) {
  if (slot.has_value()) return false;
  slot = T(v);
  return true;
}

bool IsBool(uint8_t v) { return v <= 1; }

// Skips one value of `type` (used when walking a validated block).
void SkipValue(Reader& r, DataType type) {
  switch (type) {
    case DataType::kByte: r.U8(); break;
    case DataType::kTwoByte: r.U16(); break;
    case DataType::kFourByte: r.U32(); break;
    case DataType::kVarInt: r.VarInt(); break;
    case DataType::kString:
    case DataType::kBinary: r.Binary(); break;
    case DataType::kPair:
      r.Binary();
      r.Binary();
      break;
    case DataType::kNone: break;
  }
}

}  // namespace

PropertyScope ScopeOf(PacketType t) {
  switch (t) {
    case PacketType::kConnect: return PS::kConnect;
    case PacketType::kConnack: return PS::kConnack;
    case PacketType::kPublish: return PS::kPublish;
    case PacketType::kPuback: return PS::kPuback;
    case PacketType::kPubrec: return PS::kPubrec;
    case PacketType::kPubrel: return PS::kPubrel;
    case PacketType::kPubcomp: return PS::kPubcomp;
    case PacketType::kSubscribe: return PS::kSubscribe;
    case PacketType::kSuback: return PS::kSuback;
    case PacketType::kUnsubscribe: return PS::kUnsubscribe;
    case PacketType::kUnsuback: return PS::kUnsuback;
    case PacketType::kAuth: return PS::kAuth;
    default: return PS::kDisconnect;
  }
}

bool PropertyAllowed(PropertyId id, PropertyScope scope) {
  return (Info(static_cast<uint8_t>(id)).scopes & S(scope)) != 0;
}

CodecStatus DecodeProperties(Reader& r, PropertyScope scope, Properties* out) {
  const uint32_t len = r.VarInt();
  if (!r.ok()) return Malformed("bad property length");
  if (len > r.remaining()) return Malformed("property length exceeds packet");
  const Bytes block = r.Take(len);
  Reader pr(block);
  uint32_t user_count = 0;
  uint32_t sub_id_count = 0;
  bool dup = false;
  while (!pr.empty()) {
    // Identifiers are Variable Byte Integers; every defined one fits in one byte.
    const uint32_t raw_id = pr.VarInt();
    if (!pr.ok()) return Malformed("bad property identifier");
    const PropInfo info = raw_id < 0x80 ? Info(uint8_t(raw_id)) : PropInfo{DataType::kNone, 0};
    if (info.type == DataType::kNone) return Malformed("unknown property identifier");
    if ((info.scopes & S(scope)) == 0) return Malformed("property not allowed in this packet");
    const auto id = static_cast<PropertyId>(raw_id);

    uint32_t num = 0;
    std::string_view str;
    Bytes bin;
    switch (info.type) {
      case DataType::kByte: num = pr.U8(); break;
      case DataType::kTwoByte: num = pr.U16(); break;
      case DataType::kFourByte: num = pr.U32(); break;
      case DataType::kVarInt: num = pr.VarInt(); break;
      case DataType::kString:
        str = pr.String();
        if (pr.ok() && !IsValidMqttUtf8(str)) return Malformed("property string is not valid UTF-8");
        break;
      case DataType::kBinary: bin = pr.Binary(); break;
      case DataType::kPair: {
        const std::string_view k = pr.String();
        const std::string_view v = pr.String();
        if (pr.ok() && (!IsValidMqttUtf8(k) || !IsValidMqttUtf8(v)))
          return Malformed("user property is not valid UTF-8");
        break;
      }
      case DataType::kNone: break;
    }
    if (!pr.ok()) return Malformed("property value truncated");

    switch (id) {
      case PropertyId::kPayloadFormatIndicator:
        if (!IsBool(uint8_t(num))) return ProtocolError("payload format indicator not 0 or 1");
        dup |= !SetOnce(out->payload_format_indicator, num);
        break;
      case PropertyId::kMessageExpiryInterval:
        dup |= !SetOnce(out->message_expiry_interval, num);
        break;
      case PropertyId::kContentType: dup |= !SetOnce(out->content_type, str); break;
      case PropertyId::kResponseTopic:
        if (str.empty() || HasWildcard(str))
          return ProtocolError("response topic must be a topic name");
        dup |= !SetOnce(out->response_topic, str);
        break;
      case PropertyId::kCorrelationData: dup |= !SetOnce(out->correlation_data, bin); break;
      case PropertyId::kSubscriptionIdentifier:
        if (num == 0) return ProtocolError("subscription identifier 0");
        // Repeats only where a server forwards a PUBLISH matching several subscriptions.
        if (sub_id_count > 0 && scope != PS::kPublish) dup = true;
        ++sub_id_count;
        break;
      case PropertyId::kSessionExpiryInterval:
        dup |= !SetOnce(out->session_expiry_interval, num);
        break;
      case PropertyId::kAssignedClientIdentifier:
        dup |= !SetOnce(out->assigned_client_identifier, str);
        break;
      case PropertyId::kServerKeepAlive: dup |= !SetOnce(out->server_keep_alive, num); break;
      case PropertyId::kAuthenticationMethod:
        dup |= !SetOnce(out->authentication_method, str);
        break;
      case PropertyId::kAuthenticationData: dup |= !SetOnce(out->authentication_data, bin); break;
      case PropertyId::kRequestProblemInformation:
        if (!IsBool(uint8_t(num))) return ProtocolError("request problem information not 0 or 1");
        dup |= !SetOnce(out->request_problem_information, num);
        break;
      case PropertyId::kWillDelayInterval: dup |= !SetOnce(out->will_delay_interval, num); break;
      case PropertyId::kRequestResponseInformation:
        if (!IsBool(uint8_t(num))) return ProtocolError("request response information not 0 or 1");
        dup |= !SetOnce(out->request_response_information, num);
        break;
      case PropertyId::kResponseInformation:
        dup |= !SetOnce(out->response_information, str);
        break;
      case PropertyId::kServerReference: dup |= !SetOnce(out->server_reference, str); break;
      case PropertyId::kReasonString: dup |= !SetOnce(out->reason_string, str); break;
      case PropertyId::kReceiveMaximum:
        if (num == 0) return ProtocolError("receive maximum 0");
        dup |= !SetOnce(out->receive_maximum, num);
        break;
      case PropertyId::kTopicAliasMaximum: dup |= !SetOnce(out->topic_alias_maximum, num); break;
      case PropertyId::kTopicAlias:
        if (num == 0) return {ReasonCode::kTopicAliasInvalid, "topic alias 0"};
        dup |= !SetOnce(out->topic_alias, num);
        break;
      case PropertyId::kMaximumQos:
        if (!IsBool(uint8_t(num))) return ProtocolError("maximum QoS not 0 or 1");
        dup |= !SetOnce(out->maximum_qos, num);
        break;
      case PropertyId::kRetainAvailable:
        if (!IsBool(uint8_t(num))) return ProtocolError("retain available not 0 or 1");
        dup |= !SetOnce(out->retain_available, num);
        break;
      case PropertyId::kUserProperty: ++user_count; break;
      case PropertyId::kMaximumPacketSize:
        if (num == 0) return ProtocolError("maximum packet size 0");
        dup |= !SetOnce(out->maximum_packet_size, num);
        break;
      case PropertyId::kWildcardSubscriptionAvailable:
        if (!IsBool(uint8_t(num))) return ProtocolError("wildcard subscription available not 0 or 1");
        dup |= !SetOnce(out->wildcard_subscription_available, num);
        break;
      case PropertyId::kSubscriptionIdentifierAvailable:
        if (!IsBool(uint8_t(num)))
          return ProtocolError("subscription identifier available not 0 or 1");
        dup |= !SetOnce(out->subscription_identifier_available, num);
        break;
      case PropertyId::kSharedSubscriptionAvailable:
        if (!IsBool(uint8_t(num))) return ProtocolError("shared subscription available not 0 or 1");
        dup |= !SetOnce(out->shared_subscription_available, num);
        break;
    }
    if (dup) return ProtocolError("property included more than once");
  }
  if (user_count) out->user_properties = UserProperties::FromWire(block, user_count);
  if (sub_id_count) out->subscription_ids = SubscriptionIds::FromWire(block, sub_id_count);
  return {};
}

namespace internal {

void ForEachUserProperty(Bytes block, void (*fn)(void*, const StringPair&), void* ctx) {
  Reader r(block);
  while (!r.empty() && r.ok()) {
    const uint8_t id = uint8_t(r.VarInt());
    if (id == static_cast<uint8_t>(PropertyId::kUserProperty)) {
      StringPair pair;
      pair.key = r.String();
      pair.value = r.String();
      fn(ctx, pair);
    } else {
      SkipValue(r, Info(id).type);
    }
  }
}

void ForEachSubscriptionId(Bytes block, void (*fn)(void*, const uint32_t&), void* ctx) {
  Reader r(block);
  while (!r.empty() && r.ok()) {
    const uint8_t id = uint8_t(r.VarInt());
    if (id == static_cast<uint8_t>(PropertyId::kSubscriptionIdentifier)) {
      const uint32_t v = r.VarInt();
      fn(ctx, v);
    } else {
      SkipValue(r, Info(id).type);
    }
  }
}

}  // namespace internal

namespace {

// One pass used for both sizing and writing, so the two can never disagree.
template <typename Sink>
void VisitProperties(const Properties& p, Sink& s) {
  auto byte = [&](PropertyId id, const std::optional<uint8_t>& v) {
    if (v) s.Byte(id, *v);
  };
  auto two = [&](PropertyId id, const std::optional<uint16_t>& v) {
    if (v) s.Two(id, *v);
  };
  auto four = [&](PropertyId id, const std::optional<uint32_t>& v) {
    if (v) s.Four(id, *v);
  };
  auto str = [&](PropertyId id, const std::optional<std::string_view>& v) {
    if (v) s.Bin(id, AsBytes(*v));
  };
  auto bin = [&](PropertyId id, const std::optional<Bytes>& v) {
    if (v) s.Bin(id, *v);
  };
  byte(PropertyId::kPayloadFormatIndicator, p.payload_format_indicator);
  four(PropertyId::kMessageExpiryInterval, p.message_expiry_interval);
  str(PropertyId::kContentType, p.content_type);
  str(PropertyId::kResponseTopic, p.response_topic);
  bin(PropertyId::kCorrelationData, p.correlation_data);
  p.subscription_ids.ForEach([&](const uint32_t& v) { s.Var(PropertyId::kSubscriptionIdentifier, v); });
  four(PropertyId::kSessionExpiryInterval, p.session_expiry_interval);
  str(PropertyId::kAssignedClientIdentifier, p.assigned_client_identifier);
  two(PropertyId::kServerKeepAlive, p.server_keep_alive);
  str(PropertyId::kAuthenticationMethod, p.authentication_method);
  bin(PropertyId::kAuthenticationData, p.authentication_data);
  byte(PropertyId::kRequestProblemInformation, p.request_problem_information);
  four(PropertyId::kWillDelayInterval, p.will_delay_interval);
  byte(PropertyId::kRequestResponseInformation, p.request_response_information);
  str(PropertyId::kResponseInformation, p.response_information);
  str(PropertyId::kServerReference, p.server_reference);
  str(PropertyId::kReasonString, p.reason_string);
  two(PropertyId::kReceiveMaximum, p.receive_maximum);
  two(PropertyId::kTopicAliasMaximum, p.topic_alias_maximum);
  two(PropertyId::kTopicAlias, p.topic_alias);
  byte(PropertyId::kMaximumQos, p.maximum_qos);
  byte(PropertyId::kRetainAvailable, p.retain_available);
  p.user_properties.ForEach([&](const StringPair& kv) { s.Pair(kv); });
  four(PropertyId::kMaximumPacketSize, p.maximum_packet_size);
  byte(PropertyId::kWildcardSubscriptionAvailable, p.wildcard_subscription_available);
  byte(PropertyId::kSubscriptionIdentifierAvailable, p.subscription_identifier_available);
  byte(PropertyId::kSharedSubscriptionAvailable, p.shared_subscription_available);
}

struct SizeSink {
  size_t n = 0;
  void Byte(PropertyId, uint8_t) { n += 2; }
  void Two(PropertyId, uint16_t) { n += 3; }
  void Four(PropertyId, uint32_t) { n += 5; }
  void Var(PropertyId, uint32_t v) { n += 1 + VarIntSize(v); }
  void Bin(PropertyId, Bytes b) { n += 3 + b.size(); }
  void Pair(const StringPair& kv) { n += 5 + kv.key.size() + kv.value.size(); }
};

struct WriteSink {
  Writer& w;
  void Id(PropertyId id) { w.VarInt(static_cast<uint8_t>(id)); }
  void Byte(PropertyId id, uint8_t v) { Id(id), w.U8(v); }
  void Two(PropertyId id, uint16_t v) { Id(id), w.U16(v); }
  void Four(PropertyId id, uint32_t v) { Id(id), w.U32(v); }
  void Var(PropertyId id, uint32_t v) { Id(id), w.VarInt(v); }
  void Bin(PropertyId id, Bytes b) { Id(id), w.Binary(b); }
  void Pair(const StringPair& kv) {
    Id(PropertyId::kUserProperty);
    w.String(kv.key);
    w.String(kv.value);
  }
};

// Sizes the block and checks it against the decoder's rules in the same pass, so we never
// send what we would ourselves reject.
struct CheckSink : SizeSink {
  PropertyScope scope;
  bool ok = true;
  explicit CheckSink(PropertyScope s) : scope(s) {}
  void Allowed(PropertyId id) { ok &= PropertyAllowed(id, scope); }
  void Byte(PropertyId id, uint8_t v) {
    SizeSink::Byte(id, v);
    Allowed(id);
    ok &= v <= 1;  // every one-byte property is a flag
  }
  void Two(PropertyId id, uint16_t v) {
    SizeSink::Two(id, v);
    Allowed(id);
    if (id == PropertyId::kReceiveMaximum || id == PropertyId::kTopicAlias) ok &= v != 0;
  }
  void Four(PropertyId id, uint32_t v) {
    SizeSink::Four(id, v);
    Allowed(id);
    if (id == PropertyId::kMaximumPacketSize) ok &= v != 0;
  }
  void Var(PropertyId id, uint32_t v) {
    SizeSink::Var(id, v);
    Allowed(id);
    ok &= v != 0 && v <= kMaxVarInt;
  }
  void Bin(PropertyId id, Bytes b) {
    SizeSink::Bin(id, b);
    Allowed(id);
    ok &= b.size() <= 0xFFFF;
  }
  void Pair(const StringPair& kv) {
    SizeSink::Pair(kv);
    Allowed(PropertyId::kUserProperty);
    ok &= kv.key.size() <= 0xFFFF && kv.value.size() <= 0xFFFF;
  }
};

}  // namespace

bool CheckedPropertiesSize(const Properties& p, PropertyScope scope, size_t* size) {
  CheckSink check(scope);
  VisitProperties(p, check);
  // Only PUBLISH may carry several Subscription Identifiers.
  if (scope != PropertyScope::kPublish && p.subscription_ids.size() > 1) check.ok = false;
  if (check.n > kMaxVarInt) check.ok = false;
  *size = VarIntSize(uint32_t(std::min<size_t>(check.n, kMaxVarInt))) + check.n;
  return check.ok;
}

bool PropertiesEncodable(const Properties& p, PropertyScope scope) {
  size_t unused;
  return CheckedPropertiesSize(p, scope, &unused);
}

size_t PropertiesBodySize(const Properties& p) {
  SizeSink s;
  VisitProperties(p, s);
  return s.n;
}

void EncodeProperties(const Properties& p, Writer& w) {
  w.VarInt(uint32_t(PropertiesBodySize(p)));
  WriteSink s{w};
  VisitProperties(p, s);
}

}  // namespace qbridge::mqtt
