// Private to dataplane/worker/: the record a worker keeps per connection (south QUIC, south
// TCP, north bridge; one type so one slot table and one ConnRef serve all three) and the
// constants and small helpers the worker's files share. Nothing outside dataplane/worker/
// includes this file (tools/check_includes.sh); other cores name a connection by ConnRef.
#pragma once

#include <cassert>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "quic/fifo.h"
#include "quic/tls_stream.h"
#include "dataplane/worker/worker.h"
#include "mqtt/framer.h"
#include "mqtt/qos.h"

namespace qbridge::dp {

// Where the packet identifier sits in an encoded QoS 1/2 PUBLISH: after the fixed header
// (type byte, remaining length) and the topic (two length bytes, then the topic).
inline size_t PacketIdOffset(const quic::Buffer& pk, size_t topic_len) {
  size_t hdr = 1;
  while (hdr < pk.size() && (pk[hdr] & 0x80)) ++hdr;
  return hdr + 1 + 2 + topic_len;
}

// Numbers a PUBLISH encoded with a placeholder identifier (not yet shared with a stream).
inline void SetPacketId(quic::Buffer& pk, size_t offset, uint16_t id) {
  assert(pk.unique());  // a buffer a connection holds is never changed
  const std::span<uint8_t> b = pk.mutable_span();
  b[offset] = uint8_t(id >> 8);
  b[offset + 1] = uint8_t(id);
}

// Bounds per loop iteration, so one busy source cannot starve the others.
inline constexpr size_t kMaxMsgsPerRing = 256;  // messages taken from each ring per iteration
inline constexpr size_t kMaxDatagramsPerConn = 64;  // datagrams one connection writes per iteration
// ... and a bridge, which carries what many south connections sent in that iteration: at
// 64 it fell behind a TCP receive burst (tcp.cc's budget) and its queue only grew.
inline constexpr size_t kMaxNorthDatagrams = 256;

// QUIC application errors of the EMQX wire model (mqtt-over-quic.md 1.6).
inline constexpr uint64_t kAppNoError = 0;
inline constexpr uint64_t kAppCtrlStreamDown = 1;
inline constexpr uint32_t kListenTag = UINT32_MAX;         // epoll tag of the TCP listener
inline constexpr uint32_t kTlsListenTag = UINT32_MAX - 1;  // and of the TLS one
// A south connection that has not sent CONNECT by then is closed (EMQX closes QUIC
// connections that never open a control stream).
inline constexpr uint64_t kConnectTimeoutNs = 10'000'000'000;
// A close asked for by the controlplane waits this long at most for the control stream's
// last packets (DISCONNECT with its reason) to be acknowledged (EMQX waits 1-3 s).
inline constexpr uint64_t kCloseLingerNs = 1'000'000'000;

inline bool IsControlType(mqtt::PacketType t) {
  using T = mqtt::PacketType;
  return t == T::kConnect || t == T::kSubscribe || t == T::kUnsubscribe || t == T::kPingreq ||
         t == T::kDisconnect || t == T::kAuth;
}

class Worker::Conn final : public quic::ConnectionEvents {
 public:
  struct Stream {
    explicit Stream(uint32_t max) : framer(max) {}
    mqtt::Framer framer;
    bool failed = false;
    bool fin_pending = false;  // the peer ended it; we end it after the acks we owe
  };
  struct Held {
    int64_t sid;
    std::vector<uint8_t> bytes;  // one whole packet
  };

  Conn(Worker* w, uint32_t slot) : w_(w), slot(slot) {}

  void Reset(bool is_north, uint32_t bridge_index) {
    ++gen;
    north = is_north;
    bridge = bridge_index;
    q = nullptr;
    owned.reset();
    activated = north;  // an upstream's packets are ours to handle from the start
    connect_seen = false;
    version = mqtt::Version::k5;
    streams.clear();
    held.clear();
    held_bytes = 0;
    data_ids.clear();
    streams_open = false;
    inbound = mqtt::InboundQos();
    ids = mqtt::PacketIdAllocator();
    out_window = 65535;
    out_queue.clear();
    shared_inflight.clear();
    e2e.clear();
    control_sent = 0;
    dead = false;
    close_at = 0;
    close_error = 0;
    dial = 0;
    connect_deadline = 0;
    fd = -1;
    tcp = tcp_connecting = tcp_close = tcp_out = tcp_dirty = tls_buffered = rx_paused = false;
    tls.reset();
    why.clear();
    peer = quic::Address();
    tx.clear();
    tx_off = 0;
  }

  ConnRef ref() const { return ConnRef{w_->config_.core, gen, slot}; }

  Stream& stream(int64_t sid) {
    auto it = streams.find(sid);
    if (it == streams.end()) {
      it = streams.emplace(sid, std::make_unique<Stream>(w_->config_.max_packet_size)).first;
    }
    return *it->second;
  }

  // quic::ConnectionEvents
  void OnHandshakeConfirmed() override {
    if (north && q && q->early_data_accepted()) w_->stats_.north_0rtt_accepted.Inc();
    if (north && !streams_open) w_->OpenBridgeStreams(*this);
  }
  void OnStreamData(int64_t sid, std::span<const uint8_t> data, bool fin) override {
    w_->OnStreamData(*this, sid, data, fin, w_->now_);
  }
  void OnStreamReset(int64_t sid, uint64_t) override { StreamGone(sid); }
  void OnStreamClosed(int64_t sid, uint64_t) override { StreamGone(sid); }
  void OnEarlyDataRejected() override {
    // Streams opened in 0-RTT are gone: open them again once the handshake completes and
    // tell the controlplane, which sends CONNECT again.
    streams_open = false;
    data_ids.clear();
    streams.clear();
  }

  void StreamGone(int64_t sid) {
    // An upstream that ends one of our data streams: its slot writes on the control stream
    // from now on (nothing is written into a dead stream).
    for (int64_t& id : data_ids)
      if (id == sid && north) id = 0;
    if (streams.erase(sid) == 0) return;
    inbound.CloseStream(uint64_t(sid));
    if (!north && sid != 0) {
      Msg m = MakeMsg(MsgType::kStreamClosed, ref(), sid);
      w_->ToControlplane(m);
    }
  }

  Worker* w_;
  uint32_t slot;
  uint16_t gen = 0;
  bool north = false;
  uint32_t bridge = 0;
  quic::Connection* q = nullptr;
  std::unique_ptr<quic::Connection> owned;  // north connections; the endpoint owns south ones
  bool activated = false;
  bool connect_seen = false;
  mqtt::Version version = mqtt::Version::k5;
  absl::flat_hash_map<int64_t, std::unique_ptr<Stream>> streams;
  std::vector<Held> held;  // packets waiting for activation
  size_t held_bytes = 0;
  std::vector<int64_t> data_ids;  // north: stream id of each data slot
  bool streams_open = false;
  mqtt::InboundQos inbound;
  mqtt::PacketIdAllocator ids;  // south: ids of PUBLISHes we deliver to this client
  uint16_t out_window = 65535;  // south: the client's Receive Maximum (its CONNECT)
  struct QueuedDelivery {       // south: a QoS 1/2 delivery waiting for the client's window
    int64_t sid;
    quic::Buffer packet;  // encoded, packet id patched when sent
    size_t id_offset;
    uint32_t shared = 0;  // the $share group it came from (0: none)
    mqtt::QoS shared_qos = mqtt::QoS::k0;  // ... and its QoS as published
  };
  // A Fifo, not a std::deque: an empty deque holds about 600 bytes, on every connection.
  quic::Fifo<QueuedDelivery> out_queue;
  // South: QoS 1/2 deliveries from $share groups the client has not acknowledged (PUBACK,
  // PUBREC): another member gets them if this connection ends first. At most the client's
  // Receive Maximum.
  struct SharedInflight {
    uint16_t id;
    uint32_t group;
    mqtt::QoS qos;  // as published (another member may have been granted more)
    quic::Buffer packet;
  };
  std::vector<SharedInflight> shared_inflight;
  // South QoS 1 PUBLISHes forwarded upstream, by stream << 16 | id: acks still awaited, and
  // whether an upstream refused the message.
  struct AwaitingAck {
    uint16_t outstanding = 0;
    bool failed = false;
  };
  absl::flat_hash_map<uint64_t, AwaitingAck> e2e;
  uint64_t control_sent = 0;    // SentBytes(0) when last looked at
  bool dead = false;
  uint64_t dial = 0;            // north: the controlplane's dial number
  MonoNs connect_deadline = 0;  // south: CONNECT must have come by then
  MonoNs close_at = 0;          // a close is pending; at the latest then
  uint64_t close_error = 0;
  // TCP transport (south listener or mqtt-tcp:// bridge): the socket, bytes not yet written.
  int fd = -1;
  bool tcp = false;
  bool tcp_connecting = false;
  bool tcp_close = false;
  bool tcp_out = false;    // EPOLLOUT armed
  bool tcp_dirty = false;  // in tcp_dirty_: tx is written at the end of the iteration
  std::vector<uint8_t> tx;  // plaintext MQTT bytes (TLS encrypts them on the way out)
  size_t tx_off = 0;
  // TLS over TCP ([listeners.ssl], tls+mqtt-tcp://); null: plain TCP.
  std::unique_ptr<quic::TlsStream> tls;
  bool tls_buffered = false;  // in tls_buffered_
  // TCP: not read while a bridge it publishes to is crowded (worker.h, HoldBack).
  bool rx_paused = false;
  std::string why;  // north: why the connection failed, when the worker knows (TLS)
  quic::Address peer;  // TCP: the other end (for log lines)
};

}  // namespace qbridge::dp
