#include "mqtt/codec.h"

#include <limits>

#include "mqtt/topic.h"

namespace qbridge::mqtt {
namespace {

constexpr std::string_view kNameMqtt = "MQTT";
constexpr std::string_view kNameMqisdp = "MQIsdp";
constexpr std::string_view kSharePrefix = "$share/";


CodecStatus CheckEnd(const Reader& r) {
  if (!r.ok()) return Malformed("packet truncated");
  if (!r.empty()) return Malformed("unexpected bytes at end of packet");
  return {};
}

CodecStatus ReadUtf8(Reader& r, std::string_view* out, const char* truncated) {
  *out = r.String();
  if (!r.ok()) return Malformed(truncated);
  if (!IsValidMqttUtf8(*out)) return Malformed("string is not valid MQTT UTF-8");
  return {};
}

CodecStatus ReadPacketId(Reader& r, uint16_t* id) {
  *id = r.U16();
  if (!r.ok()) return Malformed("packet identifier truncated");
  if (*id == 0) return ProtocolError("packet identifier 0");
  return {};
}

CodecStatus ReadReason(Reader& r, PacketType t, ReasonCode* rc) {
  *rc = static_cast<ReasonCode>(r.U8());
  if (!r.ok()) return Malformed("reason code truncated");
  if (!ReasonCodeAllowed(t, *rc)) return Malformed("reason code not valid for this packet");
  return {};
}

// Spec 2.1.3: the flags each packet type must carry in the fixed header.
CodecStatus CheckFixedFlags(PacketType t, uint8_t flags) {
  switch (t) {
    case PacketType::kPublish:
      if ((flags & 0x06) == 0x06) return Malformed("PUBLISH with QoS 3");
      if ((flags & 0x08) && (flags & 0x06) == 0) return Malformed("DUP set on a QoS 0 PUBLISH");
      return {};
    case PacketType::kPubrel:
    case PacketType::kSubscribe:
    case PacketType::kUnsubscribe:
      if (flags != 0x02) return Malformed("reserved fixed-header flags must be 0010");
      return {};
    case PacketType::kReserved: return Malformed("reserved packet type 0");
    default:
      if (flags != 0) return Malformed("reserved fixed-header flags must be 0000");
      return {};
  }
}

CodecStatus DecodeConnect(Bytes body, Connect* out) {
  Reader r(body);
  const std::string_view name = r.String();
  const uint8_t level_byte = r.U8();
  const uint8_t flags = r.U8();
  out->keep_alive = r.U16();
  if (!r.ok()) return Malformed("CONNECT variable header truncated");

  const uint8_t level = level_byte & ~kBridgeBit;
  out->bridge = (level_byte & kBridgeBit) != 0;
  if (name == kNameMqtt && (level == 4 || level == 5)) {
    out->version = static_cast<Version>(level);
  } else if (name == kNameMqisdp && level == 3) {
    out->version = Version::k31;
  } else {
    return {ReasonCode::kUnsupportedProtocolVersion, "unsupported protocol name or level"};
  }
  if (out->bridge && out->version == Version::k5)
    return {ReasonCode::kUnsupportedProtocolVersion, "bridge bit is not defined for MQTT 5"};
  const bool v5 = out->version == Version::k5;

  if (flags & 0x01) return Malformed("CONNECT reserved flag set");
  out->clean_start = flags & 0x02;
  const bool will = flags & 0x04;
  const uint8_t will_qos = (flags >> 3) & 0x03;
  const bool will_retain = flags & 0x20;
  const bool has_password = flags & 0x40;
  const bool has_username = flags & 0x80;
  if (!will && (will_qos || will_retain)) return Malformed("will QoS or retain without will flag");
  if (will_qos == 3) return Malformed("will QoS 3");
  if (!v5 && has_password && !has_username) return Malformed("password without user name");

  if (v5) {
    if (auto s = DecodeProperties(r, PropertyScope::kConnect, &out->properties); !s.ok()) return s;
    if (out->properties.authentication_data && !out->properties.authentication_method)
      return ProtocolError("authentication data without authentication method");
  }

  if (auto s = ReadUtf8(r, &out->client_id, "client identifier truncated"); !s.ok()) return s;
  if (out->client_id.empty()) {
    if (out->version == Version::k31)
      return {ReasonCode::kClientIdentifierNotValid, "MQTT 3.1 requires a client identifier"};
    if (out->version == Version::k311 && !out->clean_start)
      return {ReasonCode::kClientIdentifierNotValid, "empty client identifier needs clean session"};
  }

  if (will) {
    Will& w = out->will.emplace();
    w.qos = static_cast<QoS>(will_qos);
    w.retain = will_retain;
    if (v5) {
      if (auto s = DecodeProperties(r, PropertyScope::kWill, &w.properties); !s.ok()) return s;
    }
    if (auto s = ReadUtf8(r, &w.topic, "will topic truncated"); !s.ok()) return s;
    if (w.topic.empty() || HasWildcard(w.topic))
      return {ReasonCode::kTopicNameInvalid, "will topic is not a valid topic name"};
    w.payload = r.Binary();
    if (!r.ok()) return Malformed("will payload truncated");
  }
  if (has_username) {
    std::string_view user;
    if (auto s = ReadUtf8(r, &user, "user name truncated"); !s.ok()) return s;
    out->username = user;
  }
  if (has_password) {
    out->password = r.Binary();
    if (!r.ok()) return Malformed("password truncated");
  }
  return CheckEnd(r);
}

CodecStatus DecodeConnack(Bytes body, Version version, Connack* out) {
  Reader r(body);
  const uint8_t flags = r.U8();
  const uint8_t code = r.U8();
  if (!r.ok()) return Malformed("CONNACK truncated");
  // 3.1 had no session-present flag: the whole byte was reserved and ignored.
  if (version != Version::k31 && (flags & 0xFE)) return Malformed("CONNACK reserved flags set");
  out->session_present = version != Version::k31 && (flags & 0x01);
  if (version == Version::k5) {
    out->reason = static_cast<ReasonCode>(code);
    if (!ReasonCodeAllowed(PacketType::kConnack, out->reason))
      return Malformed("reason code not valid for CONNACK");
    if (auto s = DecodeProperties(r, PropertyScope::kConnack, &out->properties); !s.ok()) return s;
  } else {
    if (code > 5) return Malformed("CONNACK return code above 5");
    out->reason = FromV3ConnackCode(static_cast<V3ConnackCode>(code));
  }
  return CheckEnd(r);
}

CodecStatus DecodeSubscribe(Bytes body, Version version, Subscribe* out) {
  Reader r(body);
  if (auto s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  const bool v5 = version == Version::k5;
  if (v5) {
    if (auto s = DecodeProperties(r, PropertyScope::kSubscribe, &out->properties); !s.ok()) return s;
  }
  while (!r.empty()) {
    Subscription sub;
    if (auto s = ReadUtf8(r, &sub.filter, "topic filter truncated"); !s.ok()) return s;
    const uint8_t opts = r.U8();
    if (!r.ok()) return Malformed("subscription options truncated");
    if ((opts & 0x03) == 3) return Malformed("subscription QoS 3");
    sub.max_qos = static_cast<QoS>(opts & 0x03);
    if (v5) {
      if (opts & 0xC0) return Malformed("subscription options reserved bits set");
      sub.no_local = opts & 0x04;
      sub.retain_as_published = opts & 0x08;
      const uint8_t rh = (opts >> 4) & 0x03;
      if (rh == 3) return ProtocolError("retain handling 3");
      sub.retain_handling = static_cast<RetainHandling>(rh);
      if (sub.no_local && sub.filter.starts_with(kSharePrefix))
        return ProtocolError("no local on a shared subscription");
    } else if (opts & 0xFC) {
      return Malformed("subscription options reserved bits set");
    }
    out->subscriptions.push_back(sub);
  }
  if (out->subscriptions.empty()) return ProtocolError("SUBSCRIBE without topic filters");
  return {};
}

CodecStatus DecodeSuback(Bytes body, Version version, Suback* out) {
  Reader r(body);
  if (auto s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  if (version == Version::k5) {
    if (auto s = DecodeProperties(r, PropertyScope::kSuback, &out->properties); !s.ok()) return s;
  }
  while (!r.empty()) {
    const auto rc = static_cast<ReasonCode>(r.U8());
    const bool valid = version == Version::k5
                           ? ReasonCodeAllowed(PacketType::kSuback, rc)
                           : (uint8_t(rc) <= 2 || rc == ReasonCode::kUnspecifiedError);
    if (!valid) return Malformed("reason code not valid for SUBACK");
    out->reasons.push_back(rc);
  }
  if (out->reasons.empty()) return ProtocolError("SUBACK without reason codes");
  return {};
}

CodecStatus DecodeUnsubscribe(Bytes body, Version version, Unsubscribe* out) {
  Reader r(body);
  if (auto s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  if (version == Version::k5) {
    if (auto s = DecodeProperties(r, PropertyScope::kUnsubscribe, &out->properties); !s.ok())
      return s;
  }
  while (!r.empty()) {
    std::string_view filter;
    if (auto s = ReadUtf8(r, &filter, "topic filter truncated"); !s.ok()) return s;
    out->filters.push_back(filter);
  }
  if (out->filters.empty()) return ProtocolError("UNSUBSCRIBE without topic filters");
  return {};
}

CodecStatus DecodeUnsuback(Bytes body, Version version, Unsuback* out) {
  Reader r(body);
  if (auto s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  if (version != Version::k5) return CheckEnd(r);
  if (auto s = DecodeProperties(r, PropertyScope::kUnsuback, &out->properties); !s.ok()) return s;
  while (!r.empty()) {
    const auto rc = static_cast<ReasonCode>(r.U8());
    if (!ReasonCodeAllowed(PacketType::kUnsuback, rc))
      return Malformed("reason code not valid for UNSUBACK");
    out->reasons.push_back(rc);
  }
  if (out->reasons.empty()) return ProtocolError("UNSUBACK without reason codes");
  return {};
}

// DISCONNECT and AUTH: optional reason code, then optional properties.
template <typename T>
CodecStatus DecodeReasonAndProperties(Bytes body, PacketType type, T* out) {
  Reader r(body);
  if (r.empty()) return {};
  if (auto s = ReadReason(r, type, &out->reason); !s.ok()) return s;
  if (r.empty()) return {};
  if (auto s = DecodeProperties(r, ScopeOf(type), &out->properties); !s.ok()) return s;
  return CheckEnd(r);
}

}  // namespace

PacketType TypeOf(const Packet& p) {
  struct V {
    PacketType operator()(const Connect&) const { return PacketType::kConnect; }
    PacketType operator()(const Connack&) const { return PacketType::kConnack; }
    PacketType operator()(const Publish&) const { return PacketType::kPublish; }
    PacketType operator()(const PubAck& a) const { return a.type; }
    PacketType operator()(const Subscribe&) const { return PacketType::kSubscribe; }
    PacketType operator()(const Suback&) const { return PacketType::kSuback; }
    PacketType operator()(const Unsubscribe&) const { return PacketType::kUnsubscribe; }
    PacketType operator()(const Unsuback&) const { return PacketType::kUnsuback; }
    PacketType operator()(const Pingreq&) const { return PacketType::kPingreq; }
    PacketType operator()(const Pingresp&) const { return PacketType::kPingresp; }
    PacketType operator()(const Disconnect&) const { return PacketType::kDisconnect; }
    PacketType operator()(const Auth&) const { return PacketType::kAuth; }
  };
  return std::visit(V{}, p);
}

CodecStatus DecodePublish(uint8_t header, Bytes body, Version version, Publish* out) {
  if (auto s = CheckFixedFlags(PacketType::kPublish, header & 0x0F); !s.ok()) return s;
  *out = Publish{};  // callers reuse one Publish per stream: no state may carry over
  out->dup = header & 0x08;
  out->qos = static_cast<QoS>((header >> 1) & 0x03);
  out->retain = header & 0x01;
  Reader r(body);
  if (auto s = ReadUtf8(r, &out->topic, "topic name truncated"); !s.ok()) return s;
  if (HasWildcard(out->topic)) return {ReasonCode::kTopicNameInvalid, "wildcard in topic name"};
  if (out->qos != QoS::k0) {
    if (auto s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  } else {
    out->packet_id = 0;
  }
  if (version == Version::k5) {
    if (auto s = DecodeProperties(r, PropertyScope::kPublish, &out->properties); !s.ok()) return s;
    if (out->topic.empty() && !out->properties.topic_alias)
      return ProtocolError("empty topic name without topic alias");
  } else if (out->topic.empty()) {
    return {ReasonCode::kTopicNameInvalid, "empty topic name"};
  }
  out->payload = r.Rest();
  return {};
}

CodecStatus DecodePubAck(uint8_t header, Bytes body, Version version, PubAck* out) {
  const auto type = static_cast<PacketType>(header >> 4);
  if (type < PacketType::kPuback || type > PacketType::kPubcomp)
    return Malformed("not an acknowledgement packet");
  if (auto s = CheckFixedFlags(type, header & 0x0F); !s.ok()) return s;
  *out = PubAck{};
  out->type = type;
  Reader r(body);
  if (auto s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  out->reason = ReasonCode::kSuccess;
  if (version != Version::k5 || r.empty()) return CheckEnd(r);
  if (auto s = ReadReason(r, type, &out->reason); !s.ok()) return s;
  if (r.empty()) return {};
  if (auto s = DecodeProperties(r, ScopeOf(type), &out->properties); !s.ok()) return s;
  return CheckEnd(r);
}

std::optional<Version> PeekConnectVersion(Bytes body) {
  Reader r(body);
  const std::string_view name = r.String();
  const uint8_t level = r.U8() & ~kBridgeBit;
  if (!r.ok()) return std::nullopt;
  if (name == kNameMqtt && (level == 4 || level == 5)) return static_cast<Version>(level);
  if (name == kNameMqisdp && level == 3) return Version::k31;
  return std::nullopt;
}

CodecStatus Decode(uint8_t header, Bytes body, Version version, Packet* out) {
  const auto type = static_cast<PacketType>(header >> 4);
  if (auto s = CheckFixedFlags(type, header & 0x0F); !s.ok()) return s;
  switch (type) {
    case PacketType::kConnect: return DecodeConnect(body, &out->emplace<Connect>());
    case PacketType::kConnack: return DecodeConnack(body, version, &out->emplace<Connack>());
    case PacketType::kPublish: return DecodePublish(header, body, version, &out->emplace<Publish>());
    case PacketType::kPuback:
    case PacketType::kPubrec:
    case PacketType::kPubrel:
    case PacketType::kPubcomp: return DecodePubAck(header, body, version, &out->emplace<PubAck>());
    case PacketType::kSubscribe: return DecodeSubscribe(body, version, &out->emplace<Subscribe>());
    case PacketType::kSuback: return DecodeSuback(body, version, &out->emplace<Suback>());
    case PacketType::kUnsubscribe:
      return DecodeUnsubscribe(body, version, &out->emplace<Unsubscribe>());
    case PacketType::kUnsuback: return DecodeUnsuback(body, version, &out->emplace<Unsuback>());
    case PacketType::kPingreq:
      out->emplace<Pingreq>();
      return body.empty() ? CodecStatus{} : Malformed("PINGREQ with a body");
    case PacketType::kPingresp:
      out->emplace<Pingresp>();
      return body.empty() ? CodecStatus{} : Malformed("PINGRESP with a body");
    case PacketType::kDisconnect:
      if (version != Version::k5) {
        out->emplace<Disconnect>();
        return body.empty() ? CodecStatus{} : Malformed("DISCONNECT with a body");
      }
      return DecodeReasonAndProperties(body, type, &out->emplace<Disconnect>());
    case PacketType::kAuth: {
      if (version != Version::k5) return Malformed("AUTH before MQTT 5");
      auto& auth = out->emplace<Auth>();
      if (auto s = DecodeReasonAndProperties(body, type, &auth); !s.ok()) return s;
      if (!body.empty() && !auth.properties.authentication_method)
        return ProtocolError("AUTH without authentication method");
      return {};
    }
    case PacketType::kReserved: break;
  }
  return Malformed("reserved packet type 0");
}

// --- encoding --------------------------------------------------------------------------------

namespace {

// Counts what a Writer would write, with the same failure rules.
class Counter {
 public:
  static constexpr bool kValidates = true;
  bool ok() const { return ok_; }
  size_t size() const { return n_; }
  void U8(uint8_t) { n_ += 1; }
  void U16(uint16_t) { n_ += 2; }
  void U32(uint32_t) { n_ += 4; }
  void VarInt(uint32_t v) {
    if (v > kMaxVarInt) ok_ = false;
    n_ += VarIntSize(v);
  }
  void Raw(Bytes b) { n_ += b.size(); }
  void Binary(Bytes b) {
    if (b.size() > 0xFFFF) ok_ = false;
    n_ += 2 + b.size();
  }
  void String(std::string_view s) { Binary(AsBytes(s)); }
  void Props(const Properties& p, PropertyScope scope) {
    size_t size;
    if (!CheckedPropertiesSize(p, scope, &size)) ok_ = false;
    n_ += size;
  }
  void Reason(PacketType t, ReasonCode rc) {
    if (!ReasonCodeAllowed(t, rc)) ok_ = false;
    n_ += 1;
  }
  void Fail() { ok_ = false; }

 private:
  size_t n_ = 0;
  bool ok_ = true;
};

class Out : public Writer {
 public:
  static constexpr bool kValidates = false;  // the Counter pass already checked
  using Writer::Writer;
  void Props(const Properties& p, PropertyScope) { EncodeProperties(p, *this); }
  void Reason(PacketType, ReasonCode rc) { U8(static_cast<uint8_t>(rc)); }
  void Fail() {}  // the Counter pass already rejected the packet
};

bool Empty(const Properties& p) { return PropertiesBodySize(p) == 0; }

// DUP is meaningless at QoS 0 and a peer must reject it there (spec 3.3.1.1); a forwarder
// downgrading a resent message to QoS 0 gets it cleared rather than a refused packet.
uint8_t PublishFlags(const Publish& p) {
  const bool dup = p.dup && p.qos != QoS::k0;
  return uint8_t((dup ? 0x08 : 0) | (static_cast<uint8_t>(p.qos) << 1) | (p.retain ? 1 : 0));
}

template <typename W>
void Body(const Connect& c, Version, W& w) {
  const bool v5 = c.version == Version::k5;
  w.String(c.version == Version::k31 ? kNameMqisdp : kNameMqtt);
  uint8_t level = static_cast<uint8_t>(c.version);
  if (c.bridge) {
    if (v5) w.Fail();
    level |= kBridgeBit;
  }
  w.U8(level);
  uint8_t flags = c.clean_start ? 0x02 : 0;
  if (c.will) {
    flags |= 0x04 | uint8_t(static_cast<uint8_t>(c.will->qos) << 3) | (c.will->retain ? 0x20 : 0);
  }
  if (c.password) flags |= 0x40;
  if (c.username) flags |= 0x80;
  if (!v5 && c.password && !c.username) w.Fail();
  w.U8(flags);
  w.U16(c.keep_alive);
  if (v5) w.Props(c.properties, PropertyScope::kConnect);
  w.String(c.client_id);
  if (c.will) {
    if constexpr (W::kValidates) {
      if (c.will->topic.empty() || HasWildcard(c.will->topic)) w.Fail();
    }
    if (v5) w.Props(c.will->properties, PropertyScope::kWill);
    w.String(c.will->topic);
    w.Binary(c.will->payload);
  }
  if (c.username) w.String(*c.username);
  if (c.password) w.Binary(*c.password);
}

template <typename W>
void Body(const Connack& c, Version v, W& w) {
  // A refused connection never has a session (spec 3.2.2.1.1).
  const bool present = c.session_present && v != Version::k31 && c.reason == ReasonCode::kSuccess;
  w.U8(present ? 1 : 0);
  if (v == Version::k5) {
    w.Reason(PacketType::kConnack, c.reason);
    w.Props(c.properties, PropertyScope::kConnack);
  } else {
    w.U8(static_cast<uint8_t>(ToV3ConnackCode(c.reason)));
  }
}

template <typename W>
void Body(const Publish& p, Version v, W& w, bool with_payload = true) {
  if constexpr (W::kValidates) {
    if (HasWildcard(p.topic)) w.Fail();
    // An empty topic is only meaningful in 5.0 with a Topic Alias.
    if (p.topic.empty() && (v != Version::k5 || !p.properties.topic_alias)) w.Fail();
  }
  w.String(p.topic);
  if (p.qos != QoS::k0) {
    if (p.packet_id == 0) w.Fail();
    w.U16(p.packet_id);
  }
  if (v == Version::k5) w.Props(p.properties, PropertyScope::kPublish);
  if (with_payload) w.Raw(p.payload);
}

template <typename W>
void Body(const PubAck& a, Version v, W& w) {
  if (a.packet_id == 0) w.Fail();
  w.U16(a.packet_id);
  if (v != Version::k5) {
    // 3.x cannot say "not accepted": refuse rather than acknowledge.
    if (a.reason != ReasonCode::kSuccess) w.Fail();
    return;
  }
  const bool props = !Empty(a.properties);
  if (a.reason == ReasonCode::kSuccess && !props) return;
  w.Reason(a.type, a.reason);
  if (props) w.Props(a.properties, ScopeOf(a.type));
}

template <typename W>
void Body(const Subscribe& s, Version v, W& w) {
  if (s.packet_id == 0 || s.subscriptions.empty()) w.Fail();
  w.U16(s.packet_id);
  if (v == Version::k5) w.Props(s.properties, PropertyScope::kSubscribe);
  for (const Subscription& sub : s.subscriptions) {
    w.String(sub.filter);
    uint8_t opts = static_cast<uint8_t>(sub.max_qos);
    if (v == Version::k5) {
      opts |= (sub.no_local ? 0x04 : 0) | (sub.retain_as_published ? 0x08 : 0) |
              uint8_t(static_cast<uint8_t>(sub.retain_handling) << 4);
    }
    w.U8(opts);
  }
}

template <typename W>
void Body(const Suback& s, Version v, W& w) {
  if (s.packet_id == 0 || s.reasons.empty()) w.Fail();
  w.U16(s.packet_id);
  if (v == Version::k5) w.Props(s.properties, PropertyScope::kSuback);
  for (ReasonCode rc : s.reasons) {
    const auto b = static_cast<uint8_t>(rc);
    if (v == Version::k5) {
      w.Reason(PacketType::kSuback, rc);
    } else {
      w.U8(b <= 2 ? b : 0x80);  // 3.x has one failure code
    }
  }
}

template <typename W>
void Body(const Unsubscribe& u, Version v, W& w) {
  if (u.packet_id == 0 || u.filters.empty()) w.Fail();
  w.U16(u.packet_id);
  if (v == Version::k5) w.Props(u.properties, PropertyScope::kUnsubscribe);
  for (std::string_view f : u.filters) w.String(f);
}

template <typename W>
void Body(const Unsuback& u, Version v, W& w) {
  if (u.packet_id == 0) w.Fail();
  w.U16(u.packet_id);
  if (v != Version::k5) return;
  if (u.reasons.empty()) w.Fail();
  w.Props(u.properties, PropertyScope::kUnsuback);
  for (ReasonCode rc : u.reasons) w.Reason(PacketType::kUnsuback, rc);
}

template <typename W>
void Body(const Pingreq&, Version, W&) {}
template <typename W>
void Body(const Pingresp&, Version, W&) {}

template <typename T, typename W>
void ReasonAndProps(const T& d, PacketType type, W& w) {
  const bool props = !Empty(d.properties);
  if (d.reason == ReasonCode::kSuccess && !props) return;
  w.Reason(type, d.reason);
  if (props) w.Props(d.properties, ScopeOf(type));
}

template <typename W>
void Body(const Disconnect& d, Version v, W& w) {
  if (v == Version::k5) ReasonAndProps(d, PacketType::kDisconnect, w);
}

template <typename W>
void Body(const Auth& a, Version v, W& w) {
  if (v != Version::k5) w.Fail();
  // A non-empty AUTH names its method (our decoder and the spec, 3.15.2.2.2).
  if ((a.reason != ReasonCode::kSuccess || !Empty(a.properties)) &&
      !a.properties.authentication_method)
    w.Fail();
  ReasonAndProps(a, PacketType::kAuth, w);
}

uint8_t FixedHeader(const Packet& p) {
  const auto type = TypeOf(p);
  uint8_t flags = 0;
  if (const auto* pub = std::get_if<Publish>(&p)) flags = PublishFlags(*pub);
  if (type == PacketType::kPubrel || type == PacketType::kSubscribe ||
      type == PacketType::kUnsubscribe)
    flags = 0x02;
  return uint8_t(static_cast<uint8_t>(type) << 4 | flags);
}

// Body size, or SIZE_MAX when the packet cannot be encoded.
size_t BodySize(const Packet& p, Version v) {
  Counter c;
  std::visit([&](const auto& pkt) { Body(pkt, v, c); }, p);
  if (!c.ok() || c.size() > kMaxVarInt) return std::numeric_limits<size_t>::max();
  return c.size();
}

}  // namespace

size_t EncodedSize(const Packet& p, Version v) {
  const size_t body = BodySize(p, v);
  if (body == std::numeric_limits<size_t>::max()) return 0;
  return 1 + VarIntSize(uint32_t(body)) + body;
}

size_t Encode(const Packet& p, Version v, std::span<uint8_t> out) {
  const size_t body = BodySize(p, v);
  if (body == std::numeric_limits<size_t>::max()) return 0;
  Out w(out);
  w.U8(FixedHeader(p));
  w.VarInt(uint32_t(body));
  std::visit([&](const auto& pkt) { Body(pkt, v, w); }, p);
  return w.ok() ? w.size() : 0;
}

bool EncodeTo(const Packet& p, Version v, std::vector<uint8_t>& out) {
  const size_t n = EncodedSize(p, v);
  if (n == 0) return false;
  const size_t old = out.size();
  out.resize(old + n);
  if (Encode(p, v, std::span<uint8_t>(out).subspan(old)) != n) {
    out.resize(old);
    return false;
  }
  return true;
}

size_t PublishHeaderSize(const Publish& p, Version v) {
  Counter c;
  Body(p, v, c, /*with_payload=*/false);
  const size_t body = c.size() + p.payload.size();
  if (!c.ok() || body > kMaxVarInt) return 0;
  return 1 + VarIntSize(uint32_t(body)) + c.size();
}

size_t EncodePublishHeader(const Publish& p, Version v, std::span<uint8_t> out) {
  Counter c;
  Body(p, v, c, /*with_payload=*/false);
  const size_t body = c.size() + p.payload.size();
  if (!c.ok() || body > kMaxVarInt) return 0;
  Out w(out);
  w.U8(uint8_t(static_cast<uint8_t>(PacketType::kPublish) << 4 | PublishFlags(p)));
  w.VarInt(uint32_t(body));
  Body(p, v, w, /*with_payload=*/false);
  return w.ok() ? w.size() : 0;
}

}  // namespace qbridge::mqtt
