#include "mqtt/types.h"

namespace qbridge::mqtt {
namespace {

constexpr uint16_t Bit(PacketType t) { return uint16_t(1u << static_cast<unsigned>(t)); }

constexpr uint16_t kConnack = Bit(PacketType::kConnack);
constexpr uint16_t kPuback = Bit(PacketType::kPuback);
constexpr uint16_t kPubrec = Bit(PacketType::kPubrec);
constexpr uint16_t kPubrel = Bit(PacketType::kPubrel);
constexpr uint16_t kPubcomp = Bit(PacketType::kPubcomp);
constexpr uint16_t kSuback = Bit(PacketType::kSuback);
constexpr uint16_t kUnsuback = Bit(PacketType::kUnsuback);
constexpr uint16_t kDisconnect = Bit(PacketType::kDisconnect);
constexpr uint16_t kAuth = Bit(PacketType::kAuth);

struct CodeInfo {
  std::string_view name;
  uint16_t packets;  // bit per PacketType where the code may appear
};

// Spec 2.4, table 2-6.
constexpr CodeInfo Info(ReasonCode rc) {
  switch (rc) {
    case ReasonCode::kSuccess:
      return {"Success", kConnack | kPuback | kPubrec | kPubrel | kPubcomp | kUnsuback | kAuth |
                             kDisconnect | kSuback};
    case ReasonCode::kGrantedQos1: return {"Granted QoS 1", kSuback};
    case ReasonCode::kGrantedQos2: return {"Granted QoS 2", kSuback};
    case ReasonCode::kDisconnectWithWill: return {"Disconnect with Will Message", kDisconnect};
    case ReasonCode::kNoMatchingSubscribers: return {"No matching subscribers", kPuback | kPubrec};
    case ReasonCode::kNoSubscriptionExisted: return {"No subscription existed", kUnsuback};
    case ReasonCode::kContinueAuthentication: return {"Continue authentication", kAuth};
    case ReasonCode::kReAuthenticate: return {"Re-authenticate", kAuth};
    case ReasonCode::kUnspecifiedError:
      return {"Unspecified error", kConnack | kPuback | kPubrec | kSuback | kUnsuback | kDisconnect};
    case ReasonCode::kMalformedPacket: return {"Malformed Packet", kConnack | kDisconnect};
    case ReasonCode::kProtocolError: return {"Protocol Error", kConnack | kDisconnect};
    case ReasonCode::kImplementationSpecificError:
      return {"Implementation specific error",
              kConnack | kPuback | kPubrec | kSuback | kUnsuback | kDisconnect};
    case ReasonCode::kUnsupportedProtocolVersion:
      return {"Unsupported Protocol Version", kConnack};
    case ReasonCode::kClientIdentifierNotValid: return {"Client Identifier not valid", kConnack};
    case ReasonCode::kBadUserNameOrPassword: return {"Bad User Name or Password", kConnack};
    case ReasonCode::kNotAuthorized:
      return {"Not authorized", kConnack | kPuback | kPubrec | kSuback | kUnsuback | kDisconnect};
    case ReasonCode::kServerUnavailable: return {"Server unavailable", kConnack};
    case ReasonCode::kServerBusy: return {"Server busy", kConnack | kDisconnect};
    case ReasonCode::kBanned: return {"Banned", kConnack};
    case ReasonCode::kServerShuttingDown: return {"Server shutting down", kDisconnect};
    case ReasonCode::kBadAuthenticationMethod:
      return {"Bad authentication method", kConnack | kDisconnect};
    case ReasonCode::kKeepAliveTimeout: return {"Keep Alive timeout", kDisconnect};
    case ReasonCode::kSessionTakenOver: return {"Session taken over", kDisconnect};
    case ReasonCode::kTopicFilterInvalid:
      return {"Topic Filter invalid", kSuback | kUnsuback | kDisconnect};
    case ReasonCode::kTopicNameInvalid:
      return {"Topic Name invalid", kConnack | kPuback | kPubrec | kDisconnect};
    case ReasonCode::kPacketIdentifierInUse:
      return {"Packet Identifier in use", kPuback | kPubrec | kSuback | kUnsuback};
    case ReasonCode::kPacketIdentifierNotFound:
      return {"Packet Identifier not found", kPubrel | kPubcomp};
    case ReasonCode::kReceiveMaximumExceeded: return {"Receive Maximum exceeded", kDisconnect};
    case ReasonCode::kTopicAliasInvalid: return {"Topic Alias invalid", kDisconnect};
    case ReasonCode::kPacketTooLarge: return {"Packet too large", kConnack | kDisconnect};
    case ReasonCode::kMessageRateTooHigh: return {"Message rate too high", kDisconnect};
    case ReasonCode::kQuotaExceeded:
      return {"Quota exceeded", kConnack | kPuback | kPubrec | kSuback | kDisconnect};
    case ReasonCode::kAdministrativeAction: return {"Administrative action", kDisconnect};
    case ReasonCode::kPayloadFormatInvalid:
      return {"Payload format invalid", kConnack | kPuback | kPubrec | kDisconnect};
    case ReasonCode::kRetainNotSupported: return {"Retain not supported", kConnack | kDisconnect};
    case ReasonCode::kQosNotSupported: return {"QoS not supported", kConnack | kDisconnect};
    case ReasonCode::kUseAnotherServer: return {"Use another server", kConnack | kDisconnect};
    case ReasonCode::kServerMoved: return {"Server moved", kConnack | kDisconnect};
    case ReasonCode::kSharedSubscriptionsNotSupported:
      return {"Shared Subscriptions not supported", kSuback | kDisconnect};
    case ReasonCode::kConnectionRateExceeded:
      return {"Connection rate exceeded", kConnack | kDisconnect};
    case ReasonCode::kMaximumConnectTime: return {"Maximum connect time", kDisconnect};
    case ReasonCode::kSubscriptionIdentifiersNotSupported:
      return {"Subscription Identifiers not supported", kSuback | kDisconnect};
    case ReasonCode::kWildcardSubscriptionsNotSupported:
      return {"Wildcard Subscriptions not supported", kSuback | kDisconnect};
  }
  return {"", 0};
}

}  // namespace

std::string_view PacketTypeName(PacketType t) {
  static constexpr std::string_view kNames[16] = {
      "RESERVED", "CONNECT",  "CONNACK",     "PUBLISH",  "PUBACK",  "PUBREC",
      "PUBREL",   "PUBCOMP",  "SUBSCRIBE",   "SUBACK",   "UNSUBSCRIBE",
      "UNSUBACK", "PINGREQ",  "PINGRESP",    "DISCONNECT", "AUTH"};
  return kNames[static_cast<uint8_t>(t) & 0x0F];
}

std::string_view ReasonCodeName(ReasonCode rc) {
  const auto name = Info(rc).name;
  return name.empty() ? std::string_view("Unknown reason code") : name;
}

bool ReasonCodeAllowed(PacketType t, ReasonCode rc) { return (Info(rc).packets & Bit(t)) != 0; }

V3ConnackCode ToV3ConnackCode(ReasonCode rc) {
  switch (rc) {
    case ReasonCode::kSuccess: return V3ConnackCode::kAccepted;
    case ReasonCode::kUnsupportedProtocolVersion: return V3ConnackCode::kUnacceptableProtocolVersion;
    case ReasonCode::kClientIdentifierNotValid: return V3ConnackCode::kIdentifierRejected;
    case ReasonCode::kBadUserNameOrPassword:
    case ReasonCode::kBadAuthenticationMethod: return V3ConnackCode::kBadUserNameOrPassword;
    case ReasonCode::kNotAuthorized:
    case ReasonCode::kBanned: return V3ConnackCode::kNotAuthorized;
    default: return V3ConnackCode::kServerUnavailable;
  }
}

ReasonCode FromV3ConnackCode(V3ConnackCode c) {
  switch (c) {
    case V3ConnackCode::kAccepted: return ReasonCode::kSuccess;
    case V3ConnackCode::kUnacceptableProtocolVersion: return ReasonCode::kUnsupportedProtocolVersion;
    case V3ConnackCode::kIdentifierRejected: return ReasonCode::kClientIdentifierNotValid;
    case V3ConnackCode::kServerUnavailable: return ReasonCode::kServerUnavailable;
    case V3ConnackCode::kBadUserNameOrPassword: return ReasonCode::kBadUserNameOrPassword;
    case V3ConnackCode::kNotAuthorized: return ReasonCode::kNotAuthorized;
  }
  return ReasonCode::kUnspecifiedError;
}

}  // namespace qbridge::mqtt
