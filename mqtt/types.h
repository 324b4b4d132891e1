// Protocol constants shared by the codec, topics and QoS state: versions, packet types,
// reason codes. Pure C++, no I/O.
#pragma once

#include <cstdint>
#include <string_view>

namespace qbridge::mqtt {

// The protocol level byte of CONNECT. 3.1 uses the name "MQIsdp", the others "MQTT".
enum class Version : uint8_t { k31 = 3, k311 = 4, k5 = 5 };

// A 3.1/3.1.1 CONNECT may carry the bridge bit (0x80) in the level byte; NanoMQ and
// mosquitto bridges send 0x84. It asks the broker not to echo the bridge's own messages.
inline constexpr uint8_t kBridgeBit = 0x80;

enum class PacketType : uint8_t {
  kReserved = 0,
  kConnect = 1,
  kConnack = 2,
  kPublish = 3,
  kPuback = 4,
  kPubrec = 5,
  kPubrel = 6,
  kPubcomp = 7,
  kSubscribe = 8,
  kSuback = 9,
  kUnsubscribe = 10,
  kUnsuback = 11,
  kPingreq = 12,
  kPingresp = 13,
  kDisconnect = 14,
  kAuth = 15,
};

std::string_view PacketTypeName(PacketType t);

enum class QoS : uint8_t { k0 = 0, k1 = 1, k2 = 2 };

// MQTT 5.0 reason codes (spec 2.4). The 3.1.1 CONNACK return codes are mapped from
// these by ToV3ConnackCode().
enum class ReasonCode : uint8_t {
  kSuccess = 0x00,  // also Normal disconnection, Granted QoS 0
  kGrantedQos1 = 0x01,
  kGrantedQos2 = 0x02,
  kDisconnectWithWill = 0x04,
  kNoMatchingSubscribers = 0x10,
  kNoSubscriptionExisted = 0x11,
  kContinueAuthentication = 0x18,
  kReAuthenticate = 0x19,
  kUnspecifiedError = 0x80,
  kMalformedPacket = 0x81,
  kProtocolError = 0x82,
  kImplementationSpecificError = 0x83,
  kUnsupportedProtocolVersion = 0x84,
  kClientIdentifierNotValid = 0x85,
  kBadUserNameOrPassword = 0x86,
  kNotAuthorized = 0x87,
  kServerUnavailable = 0x88,
  kServerBusy = 0x89,
  kBanned = 0x8A,
  kServerShuttingDown = 0x8B,
  kBadAuthenticationMethod = 0x8C,
  kKeepAliveTimeout = 0x8D,
  kSessionTakenOver = 0x8E,
  kTopicFilterInvalid = 0x8F,
  kTopicNameInvalid = 0x90,
  kPacketIdentifierInUse = 0x91,
  kPacketIdentifierNotFound = 0x92,
  kReceiveMaximumExceeded = 0x93,
  kTopicAliasInvalid = 0x94,
  kPacketTooLarge = 0x95,
  kMessageRateTooHigh = 0x96,
  kQuotaExceeded = 0x97,
  kAdministrativeAction = 0x98,
  kPayloadFormatInvalid = 0x99,
  kRetainNotSupported = 0x9A,
  kQosNotSupported = 0x9B,
  kUseAnotherServer = 0x9C,
  kServerMoved = 0x9D,
  kSharedSubscriptionsNotSupported = 0x9E,
  kConnectionRateExceeded = 0x9F,
  kMaximumConnectTime = 0xA0,
  kSubscriptionIdentifiersNotSupported = 0xA1,
  kWildcardSubscriptionsNotSupported = 0xA2,
};

std::string_view ReasonCodeName(ReasonCode rc);

// Whether `rc` may appear in a packet of type `t` (spec 2.4 table 2-6). For SUBACK and
// UNSUBACK this is per entry of the payload list.
bool ReasonCodeAllowed(PacketType t, ReasonCode rc);

// 3.1.1 CONNACK return codes (spec 3.1.1 table 3.1).
enum class V3ConnackCode : uint8_t {
  kAccepted = 0,
  kUnacceptableProtocolVersion = 1,
  kIdentifierRejected = 2,
  kServerUnavailable = 3,
  kBadUserNameOrPassword = 4,
  kNotAuthorized = 5,
};
V3ConnackCode ToV3ConnackCode(ReasonCode rc);
ReasonCode FromV3ConnackCode(V3ConnackCode c);

}  // namespace qbridge::mqtt
