// The messages cores exchange over SPSC rings: fixed 64 bytes, trivially copyable. Up to
// 16 bytes travel inline (PINGREQ, PINGRESP, acks); longer payloads ride in a heap block
// whose ownership moves with the message: whoever dequeues it releases it (ReleaseMsg).
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

namespace qbridge::dp {

// A connection as other cores name it: the owning core, a slot in its table and the
// slot's generation (a message for a connection that has since gone is recognised and
// dropped, never delivered to the slot's next tenant).
struct ConnRef {
  uint16_t core = 0;
  uint16_t gen = 0;
  uint32_t slot = UINT32_MAX;
  bool valid() const { return slot != UINT32_MAX; }
  bool operator==(const ConnRef&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ConnRef& r) {
    return H::combine(std::move(h), r.core, r.gen, r.slot);
  }
};

enum class MsgType : uint8_t {
  kNone,
  // worker -> controlplane
  kControlPacket,  // conn, stream, bytes: one whole MQTT packet the controlplane decides on
  kConnClosed,     // conn, arg: the QUIC application error (ours or the peer's); aux: bridge + 1
                   // and stream: the dial it ends (bridges); bytes: why, when the worker
                   // knows better than the error code (a failed TLS handshake)
  kBridgeUp,       // conn, aux: bridge index, arg: its dial: control and data streams are open
  kStreamClosed,   // conn, stream: a data stream ended; its subscriptions die with it
  kSnapshotAck,    // arg: the routing snapshot version the worker now uses
  kRetain,         // bytes: a PUBLISH with RETAIN (5.0 encoding) to store (empty payload: clear)
  kOffline,        // bytes: a QoS 1/2 PUBLISH (5.0 encoding, placeholder packet id) for the
                   // offline session arg (RouteKey::session) to queue
  // controlplane -> worker
  kWrite,          // conn, stream, bytes: write this packet (stream < 0: bridge data slot)
  kActivate,       // conn, arg: MQTT version, aux: Receive Maximum: CONNECT accepted, data
                   // streams may flow
  kClose,          // conn, arg: QUIC application error; after what is already queued
                   // (conn invalid and aux = bridge + 1: whatever that bridge has open)
  kBridgeConnect,  // aux: bridge index, arg: dial number: open (or reopen) the connection
  kBridgeReady,    // conn, aux: bridge index, arg: the upstream's Receive Maximum: CONNACK
                   // accepted; replay and send what waits
  kSnapshot,       // arg: const RouteSnapshot* to use from now on (the controlplane owns it)
  kAddBridge,      // aux: the new bridge's index, arg: its dial settings for this worker (an
                   // opaque handle from Runtime::PrepareBridge; the worker takes it over)
  kRemoveBridge,   // aux: a bridge a reload removed: refuse what is held for it, take no more
  // worker -> worker
  kDatagram,       // bytes: a datagram (behind its path) for a CID this core owns; with
                   // flags & kMsgPooled (here or on kPublish) the block is the sender's,
                   // handed back with:
  kBlockReturn,    // arg: a pooled block (uint8_t*) of the receiving core's, free again
  kPublish,        // bytes: a PUBLISH (5.0 encoding) for this core's connection `conn` on
                   // `stream`, or (aux = bridge + 1) for a bridge's data slot `stream`; then
                   // with flags & kMsgHasOrigin, `conn` and `arg` name the south PUBLISH
                   // (its connection; stream << 16 | packet id) waiting for the upstream's ack;
                   // a south delivery (aux 0) from a $share group carries the group's id
                   // in arg (0: none)
  kAck,            // conn, arg = stream << 16 | packet id, flags & kMsgFailed: the upstream
                   // acknowledged (or could not take) a forwarded QoS 1 PUBLISH
};

struct alignas(64) Msg {
  MsgType type = MsgType::kNone;
  uint8_t flags = 0;
  uint16_t src_core = 0;
  ConnRef conn;
  int64_t stream = 0;
  uint64_t arg = 0;
  uint32_t len = 0;
  uint32_t aux = 0;
  uint8_t* heap = nullptr;  // owned when len > kInline
  uint8_t inline_bytes[16] = {};

  static constexpr uint32_t kInline = sizeof(inline_bytes);
  std::span<const uint8_t> bytes() const {
    return {len > kInline ? heap : inline_bytes, len};
  }
};
static_assert(sizeof(Msg) == 64 && std::is_trivially_copyable_v<Msg>);

inline constexpr uint8_t kMsgHasOrigin = 1;
// kPublish with this aux: route it as if a client had published it (wills).
inline constexpr uint32_t kRouteAsPublished = UINT32_MAX;
inline constexpr uint8_t kMsgFailed = 2;
// kDatagram, kPublish: `heap` is a block of the sending core's pool, not `new`ed; the
// receiver hands it back to that core (kBlockReturn) instead of deleting it.
inline constexpr uint8_t kMsgPooled = 4;
// kControlPacket carrying a CONNECT: the client came over TCP, not QUIC.
inline constexpr uint8_t kMsgTcp = 8;
// The packet ids the controlplane uses on a bridge connection (SUBSCRIBE, UNSUBSCRIBE); the
// worker allocates PUBLISH ids below them, so the two never collide on one connection.
inline constexpr uint16_t kControlPacketIdFirst = 65001;

// A bridge's data streams are named by slot in messages; the worker maps them to stream ids.
inline constexpr int64_t BridgeDataSlot(int k) { return -2 - k; }
inline constexpr int BridgeDataSlotIndex(int64_t stream) { return int(-2 - stream); }

inline Msg MakeMsg(MsgType type, ConnRef conn, int64_t stream = 0,
                   std::span<const uint8_t> bytes = {}) {
  Msg m;
  m.type = type;
  m.conn = conn;
  m.stream = stream;
  m.len = uint32_t(bytes.size());
  if (bytes.size() > Msg::kInline) {
    m.heap = new uint8_t[bytes.size()];
    std::memcpy(m.heap, bytes.data(), bytes.size());
  } else if (!bytes.empty()) {
    std::memcpy(m.inline_bytes, bytes.data(), bytes.size());
  }
  return m;
}

inline void ReleaseMsg(Msg& m) {
  if (m.len > Msg::kInline && !(m.flags & kMsgPooled)) delete[] m.heap;
  m.heap = nullptr;
  m.len = 0;
}

}  // namespace qbridge::dp
