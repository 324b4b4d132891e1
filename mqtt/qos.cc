#include "mqtt/qos.h"

namespace qbridge::mqtt {

std::optional<uint16_t> PacketIdAllocator::Allocate() {
  if (count_ >= 65535) return std::nullopt;
  std::bitset<65536>& used = Used();
  while (used.test(next_)) next_ = next_ == 65535 ? 1 : uint16_t(next_ + 1);
  const uint16_t id = next_;
  used.set(id);
  ++count_;
  next_ = next_ == 65535 ? 1 : uint16_t(next_ + 1);
  return id;
}

bool PacketIdAllocator::Release(uint16_t id) {
  if (!InUse(id)) return false;
  used_->reset(id);
  --count_;
  return true;
}

InboundDecision InboundQos::OnPublish(uint64_t stream, QoS qos, uint16_t id) {
  if (qos == QoS::k0) return {InboundDecision::kDeliver};
  const Key key{stream, id};
  auto it = state_.find(key);
  if (it != state_.end()) {
    // A resend of a message we already hold. For QoS 2 this is what makes delivery
    // exactly-once; for QoS 1 the ack that is still owed answers both copies.
    return {it->second == State::kQos2Acked ? InboundDecision::kDuplicateResendAck
                                            : InboundDecision::kDuplicateAckOwed};
  }
  if (state_.size() >= window_) return {InboundDecision::kReceiveMaxExceeded};
  state_.emplace(key, qos == QoS::k1 ? State::kQos1Pending : State::kQos2Received);
  return {InboundDecision::kDeliver};
}

bool InboundQos::OnAckSent(uint64_t stream, uint16_t id, ReasonCode reason) {
  auto it = state_.find(Key{stream, id});
  if (it == state_.end()) return false;
  if (it->second == State::kQos1Pending || static_cast<uint8_t>(reason) >= 0x80) {
    state_.erase(it);  // exchange over: the id is the peer's to reuse
    return true;
  }
  it->second = State::kQos2Acked;  // PUBREC sent (or resent); PUBREL comes next
  return true;
}

ReasonCode InboundQos::OnPubrel(uint64_t stream, uint16_t id) {
  auto it = state_.find(Key{stream, id});
  if (it == state_.end() || it->second == State::kQos1Pending)
    return ReasonCode::kPacketIdentifierNotFound;
  if (it->second == State::kQos2Received) return ReasonCode::kProtocolError;
  state_.erase(it);
  return ReasonCode::kSuccess;
}

size_t InboundQos::CloseStream(uint64_t stream) {
  size_t n = 0;
  for (auto it = state_.begin(); it != state_.end();) {
    if (it->first.stream == stream) {
      state_.erase(it++);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

}  // namespace qbridge::mqtt
