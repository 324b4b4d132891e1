// Private to the controlplane core's files (controlplane.cc, south_sessions.cc, bridges.cc,
// routing.cc): constants of the EMQX wire model and a helper for the whole packets workers
// hand over. Nothing else includes it (tools/check_includes.sh).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/api/msg.h"
#include "mqtt/framer.h"
#include "mqtt/types.h"
#include "mqtt/wire.h"

namespace qbridge::cp {

// Names every file of the core uses (this header is private to them).
using dp::Msg;
using dp::MsgType;
using mqtt::PacketType;
using mqtt::ReasonCode;

// QUIC application errors (mqtt-over-quic.md 1.6).
inline constexpr uint64_t kAppNoError = 0;
inline constexpr uint64_t kAppCtrlStreamDown = 1;
inline constexpr size_t kMaxMsgsPerRing = 512;  // per worker ring per iteration

// Splits one whole packet (as a worker forwards it) into header and body.
inline bool Unframe(std::span<const uint8_t> whole, uint8_t* header, mqtt::Bytes* body) {
  mqtt::Framer f(mqtt::kMaxPacketSize);
  bool got = false;
  const auto s = f.Feed(whole, [&](const mqtt::Frame& fr) {
    *header = fr.header;
    *body = fr.body;  // points into `whole`: the packet lies whole in the fragment
    got = true;
    return false;
  });
  return s.ok() && got;
}

}  // namespace qbridge::cp
