// A worker core: owns QUIC connections outright (south ones accepted by its endpoint, north
// bridge connections pinned to it), frames MQTT on every stream, handles PUBLISH and its
// acks on data streams itself, and hands control packets to the controlplane over a ring.
// Its answers come back over the ring and are written ahead of data (the connection's
// scheduler serves the control stream first in every round).
//
// The loop body is PollOnce (house-style §5): receive a burst, drain the rings, run
// timers, write, count. It is a template over the packet backend (kernel UDP, DPDK, or a
// test link) so the per-datagram path has no indirect call; the rest is compiled once.
// No locks; no allocation per datagram once connections exist (control packets, rare,
// allocate their buffers).
//
// The implementation is one file per concern in this folder, each saying at its top what it
// owns: worker.cc (lifetime, slot table, timer and write phases), rings.cc (what crosses
// cores), control.cc (the controlplane's commands), streams.cc (MQTT on streams),
// routing.cc (route lookups), south.cc (end-to-end acks, deliveries), bridge.cc (the bridge
// client and its message custody), tcp.cc (MQTT over kernel TCP); conn.h is the
// per-connection record they share. The private declarations below are grouped the same way.
#pragma once

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "dataplane/api/activity.h"
#include "dataplane/api/counters.h"
#include "dataplane/api/msg.h"
#include "dataplane/api/ring_mesh.h"
#include "dataplane/api/routes.h"
#include "dataplane/api/time.h"
#include "dataplane/store/log.h"
#include "mqtt/codec.h"
#include "mqtt/framer.h"
#include "mqtt/qos.h"
#include "quic/connection.h"
#include "quic/endpoint.h"
#include "quic/fifo.h"

namespace qbridge::dp {

// What a worker needs to dial one north bridge.
struct BridgeDial {
  quic::Address local;   // our address on the backend (port 0: the backend's)
  quic::Address remote;  // the upstream's QUIC address
  // Socket backend, wildcard bridge socket: `local` names its port only; each dial takes
  // the source address the kernel picks towards `remote` then (KernelSourceFor).
  bool pick_source = false;
  // QUIC: the TLS 1.3 context; TCP (tcp below): TLS over TCP when set (tls+mqtt-tcp://).
  const quic::TlsContext* tls = nullptr;
  quic::TransportConfig transport;
  // Data streams opened after the control stream (EMQX allows 10 streams at once, the
  // control stream included), with their priorities (lower first; default 0).
  int data_streams = 1;
  std::vector<int> priorities;
  bool zero_rtt = true;  // quic_0rtt: resume with early data when a ticket is held
  mqtt::Version version = mqtt::Version::k5;  // proto_ver, for PUBLISH and its acks
  // QoS 1 messages held for the upstream while it is away or the packet-id window is full
  // (NanoMQ's max_send_queue_len), in memory; beyond it the publisher is refused.
  size_t max_queue = 10'000;
  // MQTT over TCP instead of QUIC (mqtt-tcp://): one byte stream, every slot on it.
  bool tcp = false;
  // QoS 0 beyond what the uplink carries slows the south publishers down (HoldBack)
  // instead of being dropped at the slot's bound.
  bool qos0_backpressure = true;
  // hybrid_servers: further upstreams to dial instead (server 1, 2, ...; server 0 is the
  // one above), QUIC or TCP, chosen by the controlplane for each dial.
  struct Alternate {
    quic::Address local, remote;
    bool tcp = false;
    bool pick_source = false;
    const quic::TlsContext* tls = nullptr;
  };
  std::vector<Alternate> alternates;
  uint16_t worker = 0;  // the worker that owns the bridge (dials it, keeps its custody)
  // Store-and-forward: a custody log on the owning worker (worker/store.cc, docs/store.md).
  struct Store {
    bool on = false;
    store::LogOptions log;  // dir: [store] dir / the bridge's name
    uint64_t max_bytes = 1ull << 30;
    uint64_t max_messages = 1'000'000;
    bool qos0 = false;
    // Stored messages waiting in the queue keep their bytes in memory up to this much; the
    // rest are read back from the log when their turn comes.
    uint64_t memory_bytes = 64ull << 20;
  } store;
};

// The south PUBLISH a forwarded QoS 1 message came from: it is acknowledged only when every
// upstream it went to has acknowledged (end to end).
struct Origin {
  ConnRef conn;
  int64_t stream = 0;
  uint16_t id = 0;
};

struct WorkerConfig {
  uint16_t core = 0;
  // QoS 1/2 deliveries a south client's Receive Maximum holds back, per connection (NanoMQ's
  // max_mqueue_len); beyond it they are dropped and counted.
  size_t max_mqueue_len = 2048;
  // South listener: null TLS means this worker accepts no connections.
  const quic::TlsContext* server_tls = nullptr;
  quic::EndpointConfig endpoint;
  size_t max_conns = 4096;
  uint32_t max_packet_size = 1 << 20;  // MQTT Maximum Packet Size we accept
  // Packets a south client sends on any stream before its CONNECT is accepted wait (EMQX
  // keeps such streams inactive); beyond this many bytes per connection they are dropped.
  size_t pre_activation_bytes = 256 * 1024;
  std::vector<BridgeDial> bridges;  // indexed by bridge number (the controlplane's)
  // A listening MQTT-over-TCP socket this worker accepts on (-1: none; the caller owns it).
  int tcp_listen_fd = -1;
  // A listening MQTT-over-TLS socket ([listeners.ssl]) and its server context (a stream one).
  int tls_listen_fd = -1;
  const quic::TlsContext* tcp_tls = nullptr;
  // When workers share one address (a DPDK port's queues): the UDP port each worker's
  // bridges dial from, indexed by core. A datagram to another worker's port is forwarded
  // to it. Empty: every datagram this worker receives is its own or CID-steered.
  std::vector<uint16_t> north_ports;
  // The QUIC listener's port (0: any): datagrams to another port (a bridge socket's) that
  // no bridge connection takes are dropped, never handed to the server endpoint.
  uint16_t listen_port = 0;
};

// A PUBLISH a connection received on a data path, for routing (the worker has acked or
// will ack it per its QoS). Views are valid only during the call.
struct Delivery {
  ConnRef from;
  bool north;  // from an upstream (a bridge's subscription) rather than a south client
  int64_t stream;
  const mqtt::Publish* publish;
};

class Worker {
 public:
  // Bridges a worker can hold, those added by a reload included.
  static constexpr size_t kMaxBridges = 64;
  // How long a reload waits for another worker to let go of a bridge's custody log.
  static constexpr MonoNs kStoreRetryNs = 10 * kSecNs;
  static absl::StatusOr<std::unique_ptr<Worker>> Create(WorkerConfig config, RingMesh* rings,
                                                        ActivityTable* activity);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // One loop iteration over `io` (Receive(now, fn(path, datagram)) and Send(path,
  // datagrams, segment)). Returns true when it did any work.
  template <typename Io>
  bool PollOnce(Io& io, MonoNs now);
  // TCP connections (south listener, north mqtt-tcp:// bridges): kernel sockets polled with
  // epoll from the same loop; each is a connection with one stream (stream 0).
  size_t PollTcp(MonoNs now);

  // The earliest time PollOnce has timer work (for simulations and idle sleeping).
  MonoNs NextDeadline() const;

  // Sends a PUBLISH towards bridge `bridge` on its data slot `slot`. QoS 0 goes only while
  // the bridge is ready and its slot not full (NorthSlotFull; with store_qos0 it waits in
  // the log instead); QoS 1 and 2 are sent, or held until the bridge is ready, and kept
  // until the upstream acknowledges them (PUBACK, or PUBREC then PUBCOMP; replayed with DUP,
  // or PUBREL past PUBREC, after a reconnect); `origin` hears of the ack. False when it was
  // not taken (bridge down or its slot full for QoS 0, queue full, not encodable). The
  // routing layer's entry.
  bool PublishNorth(uint32_t bridge, int slot, const mqtt::Publish& p, MonoNs now,
                    const Origin* origin = nullptr);
  // QoS 0 for a bridge waits while at most this much is queued on its data slot (QUIC) or
  // its connection (TCP).
  static constexpr uint64_t kMaxNorthQos0Bytes = 8u << 20;
  static constexpr uint64_t kMaxNorthTcpQos0Bytes = 1u << 20;
  bool NorthSlotFull(uint32_t bridge, int slot) const;
  uint64_t NorthQos0Bound(uint32_t bridge) const;
  // South QUIC streams' receive window at most (what a held-back publisher may still send).
  static constexpr uint64_t kMaxSouthStreamWindow = 2u << 20;
  // QoS 1 messages for a bridge not yet acknowledged by the upstream (sent or held).
  size_t NorthPending(uint32_t bridge) const;
  // ... of which sent and awaiting the upstream's PUBACK.
  size_t NorthInflight(uint32_t bridge) const {
    return bridge < bstate_.size() ? bstate_[bridge].inflight.size() : 0;
  }
  // Bytes queued but not yet acknowledged on a bridge's data slot (back-pressure).
  uint64_t NorthBuffered(uint32_t bridge, int slot) const;
  bool BridgeUp(uint32_t bridge) const;

  void set_on_delivery(std::function<void(const Delivery&)> fn) { on_delivery_ = std::move(fn); }

  uint16_t core() const { return config_.core; }
  const WorkerStats& stats() const { return stats_; }
  const BridgeTraffic& bridge_traffic(size_t bridge) const { return bridge_traffic_[bridge]; }
  // Control bytes queued while data from the same connection went out first: must stay 0.
  uint64_t control_overtaken() const { return control_overtaken_; }
  quic::ServerEndpoint* endpoint() { return endpoint_.get(); }
  size_t connections() const { return live_conns_; }
  size_t ring_blocks_free() const { return block_free_.size(); }

 private:
  // The record per connection (south QUIC, south TCP, north bridge): worker/conn.h.
  class Conn;
  using Emit = quic::Connection::Emit;
  using E2eKey = uint64_t;  // stream << 16 | packet id
  static E2eKey KeyOf(int64_t stream, uint16_t id) { return uint64_t(stream) << 16 | id; }

  Worker(WorkerConfig config, RingMesh* rings, ActivityTable* activity);

  // worker/worker.cc: lifetime, the slot table, the timer and write phases.
  absl::Status Init();
  Conn* AllocConn(bool north, uint32_t bridge);
  void FreeConn(Conn* c);
  Conn* Lookup(ConnRef ref);
  void RunTimers(MonoNs now);
  void RunPendingCloses(MonoNs now);
  void WriteAll(MonoNs now, Emit emit);
  const quic::Path* NorthPath(size_t bridge) const;  // a QUIC bridge's path, or null

  // worker/rings.cc: what crosses cores.
  void OnDatagram(const quic::Path& path, std::span<const uint8_t> d, MonoNs now, Emit emit,
                  bool steer);
  void ForwardDatagram(uint16_t owner, const quic::Path& path, std::span<const uint8_t> d);
  // Room for `len` bytes in `m`: inline, one of this core's blocks (flags |= kMsgPooled),
  // or, when the pool is out or `len` too large, the heap (counted).
  uint8_t* AttachBytes(Msg& m, size_t len);
  bool DrainRings(MonoNs now, Emit emit);
  void OnRoutedPublish(const Msg& m);
  // `shared`: for a south delivery from a $share group, SharedTag(group id, its QoS as
  // published) (0: none).
  bool PostPublish(uint16_t core, ConnRef to, int64_t stream, uint32_t aux, const mqtt::Publish& p,
                   const Origin* origin = nullptr, uint64_t shared = 0);
  static uint64_t SharedTag(uint32_t group, mqtt::QoS qos) { return uint64_t(group) | uint64_t(qos) << 32; }
  void FlushOutbox();

  // worker/control.cc: the controlplane's commands, and the way up to it.
  void OnControlMsg(Msg& m, MonoNs now);
  void ToControlplane(Msg m);
  // A QoS 1/2 PUBLISH for an offline session: to the controlplane, which queues it.
  static constexpr size_t kMaxOfflineBacklog = 4096;
  void QueueOffline(uint64_t session, const mqtt::Publish& p);

  // worker/streams.cc: MQTT on streams, in and out.
  void OnStreamData(Conn& c, int64_t sid, std::span<const uint8_t> data, bool fin, MonoNs now);
  void OnFrame(Conn& c, int64_t sid, const mqtt::Frame& f, MonoNs now);
  void OnPublish(Conn& c, int64_t sid, const mqtt::Frame& f);
  // Encodes `p` in `v` straight into the buffer the connection keeps until it is
  // acknowledged: no copy between encoder and transport. False when it cannot be encoded.
  bool SendPacket(Conn& c, int64_t sid, const mqtt::Packet& p, mqtt::Version v);
  bool SendPacket(Conn& c, int64_t sid, const mqtt::Packet& p);  // in the connection's version
  // Queues a buffer that is kept elsewhere too (a bridge's unacknowledged QoS 1, a $share
  // delivery that may go to another member): QUIC references it, TCP copies it.
  void SendBuffer(Conn& c, int64_t sid, quic::Buffer buf);
  // Queues `n` bytes that `fill` writes in place (false: it could not; nothing is queued).
  bool SendWith(Conn& c, int64_t sid, size_t n, absl::FunctionRef<bool(std::span<uint8_t>)> fill);
  void SendBytes(Conn& c, int64_t sid, std::span<const uint8_t> bytes) {
    (void)SendWith(c, sid, bytes.size(), [&](std::span<uint8_t> out) {
      std::memcpy(out.data(), bytes.data(), bytes.size());
      return true;
    });
  }
  void QuicQueued(Conn& c, int64_t sid);  // counts and stamps what went on a QUIC stream
  // Encodes `p` into a buffer from the pool (empty when it cannot be encoded).
  quic::Buffer Encode(const mqtt::Packet& p, mqtt::Version v);
  void StreamError(Conn& c, int64_t sid, mqtt::ReasonCode why);
  // Transport-neutral: a QUIC connection closes with `app_error`; a TCP one is flushed and
  // closed at the end of the iteration.
  void CloseConn(Conn& c, uint64_t app_error);

  // worker/routing.cc: a received PUBLISH to every route in the current snapshot. With an
  // origin, the number of upstreams that will acknowledge it later, and whether one refused.
  struct Routed {
    uint16_t awaiting = 0;
    bool failed = false;
  };
  Routed Route(const Conn& from, const mqtt::Publish& p, const Origin* origin);
  // A match of $share group `gi` (of the current snapshot): to one member, by the
  // snapshot's strategy, never `exclude`; trying the next member when one cannot take it.
  bool DeliverShared(uint32_t gi, const mqtt::Publish& p, ConnRef exclude);
  // A south connection ends: the QoS 1/2 deliveries from $share groups it had not
  // acknowledged (or not yet been sent) go to another member of their group.
  void RedeliverShared(Conn& c);
  // One of them (`qos`: as it was published), to a member other than `c`.
  void RedeliverOne(Conn& c, uint32_t group, mqtt::QoS qos, const quic::Buffer& packet);

  // worker/south.cc: end-to-end acks to south publishers, deliveries to south subscribers.
  void AckOrigin(const Origin& o, bool failed);
  void AckSouth(ConnRef ref, int64_t stream, uint16_t id, bool failed);
  void SendSouthAck(Conn& c, int64_t stream, uint16_t id, bool failed);
  // Writes a PUBLISH to one of this core's south connections on `stream`; `shared`: the
  // $share group it came from and `shared_qos` its QoS as published (its QoS 1/2 copy is
  // kept until acknowledged, for another member if this one leaves first).
  bool DeliverSouth(ConnRef to, int64_t stream, const mqtt::Publish& p, uint32_t shared = 0,
                    mqtt::QoS shared_qos = mqtt::QoS::k0);
  // Whether DeliverSouth would take a QoS `qos` message for `to` now (connected, not
  // closing, room in its window or queue): a $share group asks before it picks a member.
  bool SouthCanTake(ConnRef to, mqtt::QoS qos);
  void DrainSouthQueue(Conn& c);
  // The client acknowledged delivery `id` (PUBACK, PUBREC): no longer another member's.
  void SharedAcked(Conn& c, uint16_t id);

  // worker/bridge.cc: the bridge client and its message custody.
  struct NorthMsg;
  void DialBridge(uint32_t bridge, uint64_t dial, size_t server, MonoNs now);
  void OpenBridgeStreams(Conn& c);
  void OnNorthClosed(Conn* c);
  absl::Status AddBridge(BridgeDial dial);
  void RetireBridge(uint32_t bridge);
  void ResendNorth(uint32_t bridge);
  void OnNorthAck(Conn& c, uint16_t id, mqtt::ReasonCode reason);
  void OnBridgeReady(uint32_t bridge);
  void DrainNorthQueue(uint32_t bridge);
  bool SendNorth(uint32_t bridge, NorthMsg& m, bool dup);
  void WriteNorth(Conn* c, size_t bridge, MonoNs now, Emit emit);

  // worker/store.cc: the custody log of store-and-forward bridges.
  absl::Status OpenStore(uint32_t bridge);
  // Takes a message into the bridge's log (false: at its cap, counted); with an origin,
  // the publisher is acknowledged when the commit is durable.
  bool StoreNorth(uint32_t bridge, NorthMsg& m, const Origin* origin);
  void ReleaseStored(uint32_t bridge, const NorthMsg& m);
  bool PollStores(MonoNs now);
  void OnCommit(uint32_t bridge, const store::Commit& c);
  void StoreGauges(uint32_t bridge, MonoNs now);
  // Sets every bridge's inflight and queued gauges (bridge.cc).
  static constexpr uint64_t kBridgeGaugesEveryNs = 100 * kMsNs;
  void BridgeGauges(MonoNs now);
  void CloseStore(uint32_t bridge);
  // The queue of a store bridge keeps at most store.memory_bytes of stored messages' bytes:
  // Enqueue/Dequeued account for them, Evict drops the newest committed ones' bytes, and
  // LoadStored reads a message's bytes back before it is sent (false: unreadable, dropped).
  void Enqueue(uint32_t bridge, NorthMsg&& m);
  void Dequeued(uint32_t bridge, const NorthMsg& m);
  void Evict(uint32_t bridge);
  bool LoadStored(uint32_t bridge, NorthMsg& m);
  void SetStoredPacket(NorthMsg& m, quic::Buffer packet);

  // worker/tcp.cc: MQTT over kernel TCP sockets.
  void TcpAccept(int listen_fd, bool tls, MonoNs now);
  // Read at most `budget` bytes (the connection's share of this iteration's).
  void TcpRead(Conn& c, MonoNs now, size_t budget);
  void TlsRead(Conn& c, MonoNs now, size_t budget);
  void TlsHandshake(Conn& c);
  void TcpConnected(Conn& c);
  void TlsFailed(Conn& c, const char* when);
  void FlushTcpWrites();
  void TcpFlush(Conn& c);
  void TcpWatch(Conn& c, bool out);
  // A TLS connection GnuTLS holds decrypted records for: read again this iteration (the
  // socket will not report them).
  void QueueTlsBuffered(Conn& c);
  void DialTcpBridge(Conn& c, const BridgeDial& d);
  void FinishTcpCloses();

  // worker/bridge.cc: back-pressure from a crowded bridge to the south publishers feeding
  // it (qos0_backpressure). A south connection whose QoS 0 went onto a bridge's data slot
  // holding more than half the slot's bound is held back (TCP: not read; QUIC: that
  // stream's credit withheld, its other streams flowing) until the slot drains below a
  // quarter of it (below half after kHoldTurnNs; at the latest after kMaxHoldNs) or the
  // bridge goes down: a publisher faster than the uplink is slowed to it instead of having
  // its messages dropped at the bound. Only for bridges on this core.
  struct HeldBack {
    ConnRef conn;
    int64_t sid;
    uint32_t bridge;
    int slot;
    MonoNs since;
  };
  static constexpr MonoNs kHoldTurnNs = 1'000'000'000;  // then released below half the bound
  static constexpr MonoNs kMaxHoldNs = 5'000'000'000;   // then released whatever the slot holds
  struct Crowded {  // set by PublishNorth while Route runs
    bool set = false;
    uint32_t bridge = 0;
    int slot = 0;
  };
  void HoldBack(Conn& c, int64_t sid);
  void Unhold(Conn& c, int64_t sid);
  void ReleaseHeldBack(MonoNs now);

  WorkerConfig config_;
  RingMesh* rings_;
  ActivityTable* activity_;
  // Every buffer this core encodes MQTT packets into: recycled, so steady traffic does not
  // allocate per message. Declared before anything that holds its buffers.
  quic::BufferPool pool_;
  std::unique_ptr<quic::ServerEndpoint> endpoint_;
  std::vector<std::unique_ptr<Conn>> slots_;
  std::deque<uint32_t> free_slots_;  // oldest first: a slot's generation wraps late
  absl::flat_hash_map<const quic::Connection*, uint32_t> slot_of_;  // south connections
  size_t live_conns_ = 0;
  size_t north_reserved_ = 0;  // slots kept for bridge connections
  std::vector<Conn*> north_;  // by bridge index; null when down
  std::vector<uint8_t> north_hold_;  // by bridge index: next hop unresolved, do not write
  std::vector<ConnRef> closing_;  // closes waiting for their control stream to drain
  int epoll_fd_ = -1;
  // South connections in accept order with the time their CONNECT must have come by (every
  // entry gets the same timeout, so the front is always the earliest).
  std::deque<std::pair<ConnRef, MonoNs>> awaiting_connect_;
  std::vector<ConnRef> tcp_closing_;  // TCP connections to close at the end of the iteration
  std::vector<ConnRef> tcp_dirty_;    // TCP connections with bytes to write this iteration
  std::vector<ConnRef> tls_buffered_;  // TLS connections GnuTLS holds unread records for
  std::vector<HeldBack> held_back_;    // south connections held back for a crowded bridge
  Crowded crowded_;
  MonoNs held_stamped_at_ = 0;  // when their keepalive stamps were last renewed
  static constexpr MonoNs kHeldStampEveryNs = 100'000'000;
  uint64_t tls_failures_logged_ = 0;  // handshake failures logged this second (rate limit)
  MonoNs tls_log_second_ = 0;
  std::vector<quic::ResumptionTicket> tickets_;  // newest ticket per bridge
  // A QoS 1 or 2 PUBLISH for an upstream, encoded once (the packet id patched in at send
  // time).
  struct NorthMsg {
    Origin origin;
    bool has_origin = false;
    bool released = false;  // QoS 2: PUBREC came, PUBREL sent; PUBCOMP awaited
    bool qos0 = false;      // a stored QoS 0 message: sent without an id, released once sent
    int slot = 0;
    uint64_t store_seq = 0;  // its record in the bridge's custody log (0: not stored)
    store::Location loc;     // ... and where it lies
    bool durable = false;    // its commit completed: `packet` may be dropped and read back
    bool recovered = false;  // from an earlier run: DUP when read back
    MonoNs stored_at = 0;    // when it was stored (recovered ones: when recovered)
    uint64_t seq = 0;  // arrival order, for replay
    size_t id_offset = 0;
    // Shared with the connection once sent (ngtcp2 retransmits from it): never changed
    // after that; a replay sends a copy with DUP set.
    quic::Buffer packet;
  };
  // What a worker keeps per bridge across that bridge's connections.
  struct BridgeState {
    mqtt::PacketIdAllocator ids;  // PUBLISH ids below kControlPacketIdFirst
    absl::flat_hash_map<uint16_t, NorthMsg> inflight;  // sent, awaiting PUBACK
    std::deque<NorthMsg> queued;                      // waiting for the bridge or an id
    size_t queued_qos0 = 0;                           // ... of which stored QoS 0 messages
    bool ready = false;                               // CONNACK accepted on this connection
    uint64_t seq = 0;
    uint16_t window = 65535;  // the upstream's Receive Maximum (its CONNACK)
    std::deque<uint16_t> resend;  // ids a reconnect left to send again, oldest first
    bool removed = false;         // a reload removed the bridge
    // Store-and-forward: the custody log, and the publishers waiting for its commits (in
    // sequence order; one entry per message, so a Fifo: no allocation in steady state).
    std::unique_ptr<store::Log> log;
    quic::Fifo<std::pair<uint64_t, Origin>> committing;
    uint64_t resident_bytes = 0;  // bytes of stored messages in `queued` held in memory
    MonoNs oldest_stored_at = 0;  // the oldest stored message's time, as of the last sample
    MonoNs rate_at = 0;  // the last rate sample: when, and the log's counters then
    uint64_t rate_appended = 0, rate_released = 0;
  };
  std::vector<BridgeState> bstate_;
  std::vector<uint32_t> stored_bridges_;  // bridges with a custody log on this worker
  // Store bridges a reload gave this worker whose log another worker still held (a bridge
  // replaced onto another worker): opened again until then (bridge, give up at).
  std::vector<std::pair<uint32_t, MonoNs>> store_retry_;
  MonoNs store_retry_at_ = 0;
  MonoNs bridge_gauges_at_ = 0;           // when BridgeGauges last ran
  MonoNs store_gauges_at_ = 0;            // when the stores' gauges were last set
  bool initializing_ = false;             // in Init: a store that cannot open fails start-up
  std::vector<uint8_t> scratch_;
  std::vector<uint8_t> offline_buf_;  // QueueOffline's encoding
  absl::flat_hash_set<uint32_t> no_route_logged_;  // bridges whose failed dial was logged
  // Blocks for bytes handed to another core (steered datagrams, routed PUBLISHes),
  // allocated once; a receiver hands each back with kBlockReturn. Only with several workers.
  static constexpr size_t kBlockSize = sizeof(quic::Path) + 2048;
  static constexpr size_t kBlocks = 512;
  std::unique_ptr<uint8_t[]> block_pool_;
  std::vector<uint8_t*> block_free_;
  std::vector<Msg> outbox_cp_;  // to the controlplane, flushed once per loop
  std::vector<std::vector<Msg>> outbox_workers_;
  MonoNs now_ = 0;  // the current iteration's time, for events raised from callbacks
  std::function<void(const Delivery&)> on_delivery_;
  WorkerStats stats_;
  std::unique_ptr<BridgeTraffic[]> bridge_traffic_;  // kMaxBridges: never moves (REST reads it)
  uint64_t control_overtaken_ = 0;
  bool last_busy_ = false;
  MonoNs last_now_ = 0;
  std::vector<uint8_t> route_buf_;
  // Route's rewritten topics: an upstream's delivery mapped to a local topic, and a forward's
  // remote topic (used, encoded or copied, before the next one is built).
  std::string local_topic_, remote_topic_;
  const RouteSnapshot* routes_ = nullptr;  // owned by the controlplane (RCU)
  // Per $share group id: whose turn it is (round robin: the member index to try first;
  // sticky: the member that had the last message), kept across snapshots.
  struct ShareTurn {
    uint32_t next = 0;
    ConnRef sticky;
    int64_t sticky_stream = 0;
  };
  absl::flat_hash_map<uint32_t, ShareTurn> share_turn_;
  std::unique_ptr<Conn> injector_;  // the "publisher" of messages the controlplane injects
};

template <typename Io>
bool Worker::PollOnce(Io& io, MonoNs now) {
  now_ = now;
  auto send = [&io](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
    io.Send(p, d, seg);
  };
  const uint64_t tx_before = stats_.tx_datagrams.Get();
  size_t n = io.Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) {
    OnDatagram(p, d, now, send, /*steer=*/true);
  });
  if (epoll_fd_ >= 0) n += PollTcp(now);
  bool drained = DrainRings(now, send);
  if (!stored_bridges_.empty() || !store_retry_.empty()) drained |= PollStores(now);
  if (now - bridge_gauges_at_ >= kBridgeGaugesEveryNs) BridgeGauges(now);
  RunTimers(now);
  if (!held_back_.empty()) ReleaseHeldBack(now);
  // A bridge whose next hop is not resolved yet does not write: its packets would wait in
  // the ARP queue and their wait would count as round-trip time (an 800 ms first sample
  // paces the connection for seconds).
  if constexpr (requires(const quic::Path& p) { io.NextHopReady(p, now); }) {
    for (size_t b = 0; b < north_.size(); ++b) {
      const quic::Path* p = NorthPath(b);
      north_hold_[b] = p != nullptr && !io.NextHopReady(*p, now);
    }
  }
  WriteAll(now, [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
    stats_.tx_datagrams.Inc((d.size() + seg - 1) / seg);
    stats_.tx_bytes.Inc(d.size());
    io.Send(p, d, seg);
  });
  if (!tcp_dirty_.empty()) FlushTcpWrites();
  if (!tcp_closing_.empty()) {
    FinishTcpCloses();
    // What the closes handed to other connections ($share redelivery) goes out now too.
    if (!tcp_dirty_.empty()) FlushTcpWrites();
  }
  FlushOutbox();
  // A busy iteration's length, seen from the next one's clock read (no extra read).
  if (last_busy_ && now > last_now_) stats_.max_loop_ns.Max(now - last_now_);
  stats_.loops.Inc();
  const bool busy = n > 0 || drained || stats_.tx_datagrams.Get() != tx_before;
  if (busy) stats_.busy_loops.Inc();
  last_busy_ = busy;
  last_now_ = now;
  return busy;
}

}  // namespace qbridge::dp
