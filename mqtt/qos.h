// QoS 1 and 2 state for one connection, both directions (spec 4.3, 4.4, 4.9).
//
// Outbound ids are allocated once per connection; inbound state is keyed by
// (stream id, packet id) because over QUIC each data stream numbers its own ids (EMQX
// gives every stream its own channel copy). Over TCP, pass stream 0.
//
// Nothing here sends: each call says what the caller must write next, so the same state
// machines run under the dataplane (acks written on the PUBLISH's stream) and in tests.
#pragma once

#include <algorithm>
#include <bitset>
#include <memory>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "mqtt/types.h"

namespace qbridge::mqtt {

class PacketIdAllocator {
 public:
  // A free id in 1..65535, or nullopt when all are in use. Ids are handed out in
  // increasing order (wrapping), so a just-released id is not reused at once.
  std::optional<uint16_t> Allocate();
  // Releases an allocated id; false if it was not in use.
  bool Release(uint16_t id);
  // Marks `id` used for good (a range another party allocates from); false if in use.
  bool Reserve(uint16_t id) {
    if (id == 0 || InUse(id)) return false;
    Used().set(id);
    ++count_;
    return true;
  }
  bool InUse(uint16_t id) const { return id != 0 && used_ && used_->test(id); }
  size_t in_use() const { return count_; }

 private:
  // 8 KiB, allocated at the first id: most device sessions never get a QoS 1/2 delivery,
  // and 10,000 idle sessions should not carry 80 MB of empty bitmaps.
  std::bitset<65536>& Used() {
    if (!used_) used_ = std::make_unique<std::bitset<65536>>();
    return *used_;
  }
  std::unique_ptr<std::bitset<65536>> used_;
  uint16_t next_ = 1;
  size_t count_ = 0;
};

// --- sender side -----------------------------------------------------------------------------

enum class OutboundState : uint8_t {
  kAwaitPuback,   // QoS 1 PUBLISH sent
  kAwaitPubrec,   // QoS 2 PUBLISH sent
  kAwaitPubcomp,  // QoS 2 PUBREL sent
};

enum class AckOutcome : uint8_t {
  kCompleted,    // the message is done: delivered (success) or refused (reason >= 0x80)
  kSendPubrel,   // QoS 2: write PUBREL for this id now
  kUnknownId,    // no message in flight under this id: ignore and count
  kWrongState,   // the ack does not fit the message's state (e.g. PUBACK for QoS 2)
};

// Messages sent at QoS 1/2 awaiting acknowledgement. `Msg` is the caller's handle to the
// message (a buffer reference, a south-side ack token); it is handed back on completion.
// The window is the peer's Receive Maximum (spec 3.2.2.3.3): PUBLISHes unacknowledged by
// PUBACK, PUBCOMP or a PUBREC >= 0x80.
template <typename Msg>
class OutboundQos {
 public:
  explicit OutboundQos(uint16_t receive_maximum = 65535) { set_receive_maximum(receive_maximum); }

  void set_receive_maximum(uint16_t n) {
    window_ = n == 0 ? 65535 : n;
    inflight_.reserve(window_ < 1024 ? window_ : 1024);
  }
  uint16_t receive_maximum() const { return window_; }
  size_t inflight() const { return inflight_.size(); }
  bool CanSend() const { return inflight_.size() < window_ && ids_.in_use() < 65535; }

  // The connection's packet-id space. SUBSCRIBE and UNSUBSCRIBE must take their ids from
  // here too: an id may not be in use by any of these packets at once (spec 2.2.1).
  PacketIdAllocator& ids() { return ids_; }

  // Records a QoS 1/2 PUBLISH about to be written and returns its packet id; nullopt when
  // the window is full (the caller queues the message and retries after an ack).
  std::optional<uint16_t> Start(QoS qos, Msg msg) {
    if (qos == QoS::k0 || !CanSend()) return std::nullopt;
    const std::optional<uint16_t> id = ids_.Allocate();
    if (!id) return std::nullopt;
    inflight_.emplace(*id, Entry{qos == QoS::k1 ? OutboundState::kAwaitPuback
                                                : OutboundState::kAwaitPubrec,
                                 next_seq_++, std::move(msg)});
    return id;
  }

  // PUBACK (QoS 1). kCompleted hands the message back in *done.
  AckOutcome OnPuback(uint16_t id, Msg* done) {
    return Finish(id, OutboundState::kAwaitPuback, done);
  }

  // PUBREC (QoS 2). A reason >= 0x80 completes the message as refused (no PUBREL,
  // spec 4.3.3); otherwise the caller writes PUBREL.
  AckOutcome OnPubrec(uint16_t id, ReasonCode reason, Msg* done) {
    auto it = inflight_.find(id);
    if (it == inflight_.end()) return AckOutcome::kUnknownId;
    if (it->second.state == OutboundState::kAwaitPubcomp) return AckOutcome::kSendPubrel;  // resend
    if (it->second.state != OutboundState::kAwaitPubrec) return AckOutcome::kWrongState;
    if (static_cast<uint8_t>(reason) >= 0x80) return Finish(id, OutboundState::kAwaitPubrec, done);
    it->second.state = OutboundState::kAwaitPubcomp;
    return AckOutcome::kSendPubrel;
  }

  // PUBCOMP (QoS 2).
  AckOutcome OnPubcomp(uint16_t id, Msg* done) {
    return Finish(id, OutboundState::kAwaitPubcomp, done);
  }

  // After a reconnect with a kept session (spec 4.4): calls fn(id, state, const Msg&) in
  // the order the messages were first sent. kAwaitPuback/kAwaitPubrec: resend the
  // PUBLISH with DUP=1; kAwaitPubcomp: resend PUBREL.
  template <typename Fn>
  void ForEachPending(Fn&& fn) const {
    std::vector<std::pair<uint64_t, uint16_t>> order;
    order.reserve(inflight_.size());
    for (const auto& [id, e] : inflight_) order.emplace_back(e.seq, id);
    std::sort(order.begin(), order.end());
    for (const auto& [seq, id] : order) {
      const Entry& e = inflight_.at(id);
      fn(id, e.state, e.msg);
    }
  }

  // Drops every message (a clean session): calls fn(Msg&&) for each so the caller can
  // fail or requeue it. Packet ids are released.
  template <typename Fn>
  void Clear(Fn&& fn) {
    for (auto& [id, e] : inflight_) {
      ids_.Release(id);
      fn(std::move(e.msg));
    }
    inflight_.clear();
  }

 private:
  struct Entry {
    OutboundState state;
    uint64_t seq;
    Msg msg;
  };

  AckOutcome Finish(uint16_t id, OutboundState expected, Msg* done) {
    auto it = inflight_.find(id);
    if (it == inflight_.end()) return AckOutcome::kUnknownId;
    if (it->second.state != expected) return AckOutcome::kWrongState;
    *done = std::move(it->second.msg);
    inflight_.erase(it);
    ids_.Release(id);
    return AckOutcome::kCompleted;
  }

  PacketIdAllocator ids_;
  absl::flat_hash_map<uint16_t, Entry> inflight_;
  uint16_t window_ = 65535;
  uint64_t next_seq_ = 0;
};

// --- receiver side ---------------------------------------------------------------------------

struct InboundDecision {
  enum Kind : uint8_t {
    kDeliver,            // new message: route it; ack it (PUBACK/PUBREC) once it is safe
    kDuplicateAckOwed,   // a resend of a message whose ack we still owe: do not route it
                         // again; the ack that is pending answers both copies
    kDuplicateResendAck, // QoS 2 resend after our PUBREC: do not route it; send PUBREC again
    kReceiveMaxExceeded, // the peer broke our Receive Maximum: DISCONNECT 0x93
  };
  Kind kind;
};

// PUBLISHes received at QoS 1/2 whose exchange is not finished. QoS 1 entries live from
// PUBLISH until the caller sends PUBACK (end to end: after the upstream acked); QoS 2
// entries from PUBLISH until PUBREL, which makes a resent PUBLISH a duplicate
// (exactly-once delivery, spec 4.3.3). An ack with a failure reason (>= 0x80) ends the
// exchange at once: the sender sends no PUBREL and may reuse the id (spec 4.3.3, 4.9).
class InboundQos {
 public:
  explicit InboundQos(uint16_t receive_maximum = 65535)
      : window_(receive_maximum == 0 ? 65535 : receive_maximum) {}

  uint16_t receive_maximum() const { return window_; }
  size_t pending() const { return state_.size(); }

  InboundDecision OnPublish(uint64_t stream, QoS qos, uint16_t id);

  // The caller has sent PUBACK (QoS 1) or PUBREC (QoS 2) with `reason`. A failure reason
  // or a QoS 1 ack ends the exchange; a successful PUBREC waits for PUBREL. False when no
  // such exchange exists.
  bool OnAckSent(uint64_t stream, uint16_t id, ReasonCode reason = ReasonCode::kSuccess);

  // PUBREL: kSuccess -> send PUBCOMP; kPacketIdentifierNotFound -> send PUBCOMP with that
  // reason (5.0) or a plain PUBCOMP (3.x: the peer is retrying a completed exchange);
  // kProtocolError -> PUBREL before we sent PUBREC: the peer broke the protocol.
  ReasonCode OnPubrel(uint64_t stream, uint16_t id);

  // A QUIC data stream closed: its QoS state dies with it (EMQX's model). Returns the
  // number of entries dropped.
  size_t CloseStream(uint64_t stream);

 private:
  struct Key {
    uint64_t stream;
    uint16_t id;
    bool operator==(const Key&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.stream, k.id);
    }
  };
  enum class State : uint8_t { kQos1Pending, kQos2Received, kQos2Acked };

  absl::flat_hash_map<Key, State> state_;
  uint16_t window_;
};

}  // namespace qbridge::mqtt
