#include "dataplane/worker.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "mqtt/topic.h"

namespace qbridge::dp {
namespace {

// Where the packet identifier sits in an encoded QoS 1/2 PUBLISH: after the fixed header
// (type byte, remaining length) and the topic (two length bytes, then the topic).
size_t PacketIdOffset(const quic::Buffer& pk, size_t topic_len) {
  size_t hdr = 1;
  while (hdr < pk.size() && (pk[hdr] & 0x80)) ++hdr;
  return hdr + 1 + 2 + topic_len;
}

// Numbers a PUBLISH encoded with a placeholder identifier (not yet shared with a stream).
void SetPacketId(quic::Buffer& pk, size_t offset, uint16_t id) {
  assert(pk.unique());  // a buffer a connection holds is never changed
  const std::span<uint8_t> b = pk.mutable_span();
  b[offset] = uint8_t(id >> 8);
  b[offset + 1] = uint8_t(id);
}

// Bounds per loop iteration, so one busy source cannot starve the others.
constexpr size_t kMaxMsgsPerRing = 256;  // messages taken from each ring per iteration
constexpr size_t kMaxDatagramsPerConn = 64;  // datagrams one connection writes per iteration

// QUIC application errors of the EMQX wire model (mqtt-over-quic.md 1.6).
constexpr uint64_t kAppNoError = 0;
constexpr uint64_t kAppCtrlStreamDown = 1;
constexpr uint32_t kListenTag = UINT32_MAX;  // epoll tag of the TCP listener
// A south connection that has not sent CONNECT by then is closed (EMQX closes QUIC
// connections that never open a control stream).
constexpr uint64_t kConnectTimeoutNs = 10'000'000'000;
// A close asked for by the controlplane waits this long at most for the control stream's
// last packets (DISCONNECT with its reason) to be acknowledged (EMQX waits 1-3 s).
constexpr uint64_t kCloseLingerNs = 1'000'000'000;

bool IsControlType(mqtt::PacketType t) {
  using T = mqtt::PacketType;
  return t == T::kConnect || t == T::kSubscribe || t == T::kUnsubscribe || t == T::kPingreq ||
         t == T::kDisconnect || t == T::kAuth;
}

}  // namespace

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
    e2e.clear();
    control_sent = 0;
    dead = false;
    close_at = 0;
    close_error = 0;
    dial = 0;
    connect_deadline = 0;
    fd = -1;
    tcp = tcp_connecting = tcp_close = tcp_out = false;
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
  };
  std::deque<QueuedDelivery> out_queue;
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
  bool tcp_out = false;  // EPOLLOUT armed
  std::vector<uint8_t> tx;
  size_t tx_off = 0;
};

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerConfig config, RingMesh* rings,
                                                       ActivityTable* activity) {
  if (rings == nullptr || activity == nullptr) return absl::InvalidArgumentError("no rings");
  if (config.core >= rings->workers()) {
    return absl::InvalidArgumentError(absl::StrCat("worker core ", config.core, " has no rings"));
  }
  if (activity->size() < config.max_conns) {
    return absl::InvalidArgumentError("activity table smaller than max_conns");
  }
  std::unique_ptr<Worker> w(new Worker(std::move(config), rings, activity));
  if (absl::Status s = w->Init(); !s.ok()) return s;
  return w;
}

Worker::Worker(WorkerConfig config, RingMesh* rings, ActivityTable* activity)
    : config_(std::move(config)), rings_(rings), activity_(activity) {}

Worker::~Worker() {
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  // South connections die with the endpoint; say nothing to a controlplane that is going too.
  endpoint_.reset();
  for (Msg& m : outbox_cp_) ReleaseMsg(m);
  for (auto& v : outbox_workers_)
    for (Msg& m : v) ReleaseMsg(m);
}

absl::Status Worker::Init() {
  if (rings_->workers() > 1) {
    block_pool_ = std::make_unique<uint8_t[]>(kBlockSize * kBlocks);
    block_free_.reserve(kBlocks);
    for (size_t i = 0; i < kBlocks; ++i) block_free_.push_back(block_pool_.get() + i * kBlockSize);
  }
  // Start-up bridges are added one by one, as a reload adds one (AddBridge).
  std::vector<BridgeDial> dials = std::move(config_.bridges);
  config_.bridges.clear();
  const size_t bridges = dials.size();
  if (bridges > kMaxBridges) return absl::InvalidArgumentError("more than 64 bridges");
  if (config_.max_conns <= bridges) return absl::InvalidArgumentError("max_conns too small");
  // Slots south connections may never take: the bridges', those a reload may add included.
  north_reserved_ = std::max(bridges, std::min(kMaxBridges, config_.max_conns / 4));
  // Slots are numbered up front; a connection's state is allocated the first time its slot
  // is used and kept for reuse, so memory follows the connections actually seen.
  slots_.resize(config_.max_conns);
  for (uint32_t i = 0; i < config_.max_conns; ++i) free_slots_.push_back(i);
  bridge_traffic_ = std::make_unique<BridgeTraffic[]>(kMaxBridges);
  size_t max_payload = 1500;
  if (config_.server_tls) {
    config_.endpoint.owner_id = config_.core;
    config_.endpoint.max_connections =
        std::min(config_.endpoint.max_connections, config_.max_conns - north_reserved_);
    max_payload = std::max(max_payload, config_.endpoint.transport.max_udp_payload);
    auto ep = quic::ServerEndpoint::Create(*config_.server_tls, config_.endpoint);
    if (!ep.ok()) return ep.status();
    endpoint_ = std::move(*ep);
    endpoint_->set_on_accept([this](quic::Connection& q) -> quic::ConnectionEvents* {
      Conn* c = AllocConn(/*north=*/false, 0);
      if (c == nullptr) {  // cannot happen: the endpoint's cap is below the table's
        q.Close(2, "overloaded");
        return nullptr;
      }
      c->q = &q;
      slot_of_[&q] = c->slot;
      activity_->at(c->slot).Reset(now_);
      awaiting_connect_.emplace_back(c->ref(), now_ + kConnectTimeoutNs);
      stats_.conns_opened.Inc();
      return c;
    });
    endpoint_->set_on_close([this](quic::Connection& q) {
      auto it = slot_of_.find(&q);
      if (it == slot_of_.end()) return;
      Conn* c = slots_[it->second].get();
      slot_of_.erase(it);
      Msg m = MakeMsg(MsgType::kConnClosed, c->ref());
      m.arg = q.peer_closed() ? q.peer_app_error() : kAppNoError;
      ToControlplane(m);
      FreeConn(c);
    });
  }
  scratch_.resize(kMaxDatagramsPerConn * max_payload);
  injector_ = std::make_unique<Conn>(this, UINT32_MAX);
  injector_->Reset(/*north=*/false, 0);
  if (config_.tcp_listen_fd >= 0) {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return absl::ErrnoToStatus(errno, "epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = kListenTag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, config_.tcp_listen_fd, &ev) != 0) {
      return absl::ErrnoToStatus(errno, "epoll_ctl(listen)");
    }
  }
  for (BridgeDial& d : dials) {
    if (absl::Status st = AddBridge(std::move(d)); !st.ok()) return st;
  }
  outbox_workers_.resize(rings_->workers());
  return absl::OkStatus();
}

// --- connections -------------------------------------------------------------------------------

Worker::Conn* Worker::AllocConn(bool north, uint32_t bridge) {
  if (free_slots_.empty()) return nullptr;
  const uint32_t slot = free_slots_.front();
  free_slots_.pop_front();
  if (!slots_[slot]) slots_[slot] = std::make_unique<Conn>(this, slot);
  Conn* c = slots_[slot].get();
  c->Reset(north, bridge);
  ++live_conns_;
  return c;
}

void Worker::FreeConn(Conn* c) {
  stats_.conns_closed.Inc();
  c->q = nullptr;
  c->owned.reset();
  if (c->fd >= 0) ::close(c->fd);  // leaves the epoll set with it
  c->fd = -1;
  c->tx.clear();
  c->tx.shrink_to_fit();
  c->streams.clear();
  c->held.clear();
  std::deque<Conn::QueuedDelivery>().swap(c->out_queue);  // deliveries that waited for it
  c->e2e.clear();
  ++c->gen;  // stale references from other cores no longer match
  free_slots_.push_back(c->slot);
  --live_conns_;
}

Worker::Conn* Worker::Lookup(ConnRef ref) {
  if (ref.core != config_.core || ref.slot >= slots_.size()) return nullptr;
  Conn* c = slots_[ref.slot].get();
  if (c == nullptr || c->gen != ref.gen || (c->q == nullptr && c->fd < 0)) return nullptr;
  return c;
}

void Worker::DialBridge(uint32_t bridge, uint64_t dial, size_t server, MonoNs now) {
  if (bridge >= config_.bridges.size()) return;
  if (Conn* old = north_[bridge]) {  // a reconnect ordered while the old one lingers
    if (old->q) old->q->Close(kAppNoError);
    OnNorthClosed(old);
  }
  BridgeDial d = config_.bridges[bridge];
  if (server > 0 && server - 1 < d.alternates.size()) {  // hybrid: another upstream this time
    const BridgeDial::Alternate& a = d.alternates[server - 1];
    d.local = a.local;
    d.remote = a.remote;
    d.tcp = a.tcp;
    d.tls = a.tls;
  }
  Conn* c = live_conns_ < config_.max_conns ? AllocConn(/*north=*/true, bridge) : nullptr;
  if (c == nullptr) {
    Msg m = MakeMsg(MsgType::kConnClosed, ConnRef{config_.core, 0, UINT32_MAX}, int64_t(dial));
    m.aux = bridge + 1;
    m.arg = 2;  // overloaded: no slot
    ToControlplane(m);
    return;
  }
  c->dial = dial;
  if (d.tcp) return DialTcpBridge(*c, d);
  const quic::ResumptionTicket* ticket =
      !d.zero_rtt || tickets_[bridge].tls_session.empty() ? nullptr : &tickets_[bridge];
  auto q = quic::Connection::Connect(*d.tls, d.transport, quic::Path{d.local, d.remote}, c, now,
                                     ticket);
  if (!q.ok()) {
    FreeConn(c);
    Msg m = MakeMsg(MsgType::kConnClosed, ConnRef{config_.core, 0, UINT32_MAX}, int64_t(dial));
    m.aux = bridge + 1;
    ToControlplane(m);
    return;
  }
  c->owned = std::move(*q);
  c->q = c->owned.get();
  c->version = d.version;
  activity_->at(c->slot).Reset(now);
  north_[bridge] = c;
  stats_.conns_opened.Inc();
  // With a ticket, CONNECT may go out as 0-RTT early data: open the streams now.
  if (c->q->early_data_possible()) {
    stats_.north_0rtt_dials.Inc();
    OpenBridgeStreams(*c);
  }
}

void Worker::OpenBridgeStreams(Conn& c) {
  const BridgeDial& d = config_.bridges[c.bridge];
  auto ctrl = c.q->OpenStream(0);
  if (!ctrl.ok()) return;  // no credit yet: try again at handshake completion
  c.streams_open = true;
  c.data_ids.clear();
  for (int k = 0; k < d.data_streams; ++k) {
    const int prio = k < int(d.priorities.size()) ? d.priorities[k] : 0;
    auto s = c.q->OpenStream(prio);
    if (!s.ok()) break;  // out of the peer's credit: later slots fall back to stream 0
    c.data_ids.push_back(*s);
  }
  Msg m = MakeMsg(MsgType::kBridgeUp, c.ref());
  m.aux = c.bridge;
  m.arg = c.dial;
  m.flags = c.q->handshake_confirmed() ? 0 : 1;  // 1: early data
  ToControlplane(m);
}

// A bridge at the next index: every start-up bridge, and each one a reload adds.
absl::Status Worker::AddBridge(BridgeDial dial) {
  if (config_.bridges.size() >= kMaxBridges) return absl::ResourceExhaustedError("bridges");
  if (dial.tls == nullptr && !dial.tcp) return absl::InvalidArgumentError("bridge without TLS context");
  bool tcp = dial.tcp;
  for (const auto& a : dial.alternates) {
    if (a.tls == nullptr && !a.tcp) return absl::InvalidArgumentError("hybrid server without TLS context");
    tcp |= a.tcp;
  }
  if (tcp && epoll_fd_ < 0) {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return absl::ErrnoToStatus(errno, "epoll_create1");
  }
  if (scratch_.size() < kMaxDatagramsPerConn * dial.transport.max_udp_payload)
    scratch_.resize(kMaxDatagramsPerConn * dial.transport.max_udp_payload);
  config_.bridges.push_back(std::move(dial));
  north_.push_back(nullptr);
  north_hold_.push_back(0);
  bstate_.emplace_back();
  for (uint32_t id = kControlPacketIdFirst; id <= 65535; ++id) bstate_.back().ids.Reserve(uint16_t(id));
  tickets_.emplace_back();
  return absl::OkStatus();
}

void Worker::OnNorthClosed(Conn* c) {
  bstate_[c->bridge].ready = false;  // what is in flight is replayed on the next connection
  BridgeTraffic& bt = bridge_traffic_[c->bridge];
  bt.srtt_ns.Set(0), bt.min_rtt_ns.Set(0), bt.cwnd_bytes.Set(0), bt.bytes_in_flight.Set(0);
  if (c->q && c->q->ticket()) tickets_[c->bridge] = *c->q->ticket();
  if (c->close_at) c->close_at = 0;
  Msg m = MakeMsg(MsgType::kConnClosed, c->ref(), int64_t(c->dial));
  m.aux = c->bridge + 1;
  m.arg = c->q && c->q->peer_closed() ? c->q->peer_app_error() : kAppNoError;
  ToControlplane(m);
  if (north_[c->bridge] == c) north_[c->bridge] = nullptr;
  FreeConn(c);
}

bool Worker::BridgeUp(uint32_t bridge) const {
  return bridge < north_.size() && north_[bridge] && north_[bridge]->streams_open;
}

// --- input -------------------------------------------------------------------------------------

void Worker::OnDatagram(const quic::Path& path, std::span<const uint8_t> d, MonoNs now, Emit emit,
                        bool steer) {
  stats_.rx_datagrams.Inc();
  stats_.rx_bytes.Inc(d.size());
  if (d.empty()) return;
  if (steer && !config_.north_ports.empty()) {
    // To another worker's bridge port: its connection, whatever queue it arrived on.
    const uint16_t port = ntohs(reinterpret_cast<const sockaddr_in*>(&path.local.storage)->sin_port);
    for (uint16_t k = 0; k < config_.north_ports.size(); ++k) {
      if (config_.north_ports[k] == port && k != config_.core && k < rings_->workers()) {
        ForwardDatagram(k, path, d);
        return;
      }
    }
  }
  // Our own bridges' traffic first: their client CIDs are random, not owner-encoded. Two
  // bridges to one upstream share the 4-tuple: then the DCID says which.
  Conn* north = nullptr;
  bool shared = false;
  for (Conn* c : north_) {
    if (c && c->q && c->q->path().remote == path.remote) {
      shared = north != nullptr;
      if (!north) north = c;
      if (shared) break;
    }
  }
  if (north && shared) {
    north = nullptr;
    std::span<const uint8_t> dcid;
    if ((d[0] & 0x80) == 0) {
      if (d.size() > 1 + quic::kClientCidLen) dcid = d.subspan(1, quic::kClientCidLen);
    } else if (d.size() > 6 && d[5] <= d.size() - 6) {
      dcid = d.subspan(6, d[5]);
    }
    for (Conn* c : north_) {
      if (c && c->q && c->q->path().remote == path.remote && !dcid.empty() && c->q->HasScid(dcid)) {
        north = c;
        break;
      }
    }
    if (!north) {
      stats_.drop_no_conn.Inc();
      return;
    }
  }
  if (north) {
    if (!north->q->Read(path, d, now)) north->dead = true;
    return;
  }
  if (steer && rings_->workers() > 1) {
    // Short headers and Handshake packets carry a CID we issued: its owner is the core
    // that holds the connection. Initial and 0-RTT packets carry the client's own DCID
    // and stay where RSS put them (the 4-tuple keeps them together).
    const uint8_t* dcid = nullptr;
    size_t dcidlen = 0;
    if ((d[0] & 0x80) == 0) {
      if (d.size() > 1 + quic::kServerCidLen) dcid = d.data() + 1, dcidlen = quic::kServerCidLen;
    } else if (d.size() > 6 && ((d[0] >> 4) & 3) == 2 && d[5] <= d.size() - 6) {
      dcid = d.data() + 6, dcidlen = d[5];
    }
    if (dcidlen == quic::kServerCidLen) {
      const uint16_t owner = quic::CidOwner(dcid, dcidlen);
      if (owner != config_.core && owner < rings_->workers()) {
        ForwardDatagram(owner, path, d);
        return;
      }
    }
  }
  if (endpoint_) endpoint_->Receive(path, d, now, emit);
}

void Worker::ForwardDatagram(uint16_t owner, const quic::Path& path, std::span<const uint8_t> d) {
  // One copy, straight into the block the message hands over: the path, then the bytes.
  // Blocks come from this core's pool and come back from the receiver; only when the pool
  // is out (the receiver is far behind) or the datagram is oversized does one come from
  // the heap (counted).
  Msg m = MakeMsg(MsgType::kDatagram, ConnRef{});
  uint8_t* dst = AttachBytes(m, sizeof(quic::Path) + d.size());
  std::memcpy(dst, &path, sizeof(quic::Path));
  std::memcpy(dst + sizeof(quic::Path), d.data(), d.size());
  outbox_workers_[owner].push_back(m);
  stats_.cid_forwarded.Inc();
}

uint8_t* Worker::AttachBytes(Msg& m, size_t len) {
  m.len = uint32_t(len);
  m.src_core = config_.core;
  if (len <= Msg::kInline) return m.inline_bytes;
  if (len <= kBlockSize && !block_free_.empty()) {
    m.heap = block_free_.back();
    block_free_.pop_back();
    m.flags |= kMsgPooled;
  } else {
    m.heap = new uint8_t[len];
    stats_.ring_heap_blocks.Inc();
  }
  return m.heap;
}

bool Worker::DrainRings(MonoNs now, Emit emit) {
  Msg batch[32];
  bool any = false;
  for (size_t src = 0; src <= rings_->workers(); ++src) {
    if (src == config_.core) continue;
    MsgRing& ring = rings_->ring(src, config_.core);
    stats_.ring_in_hwm.Max(ring.ApproxSize());
    size_t taken = 0;
    while (taken < kMaxMsgsPerRing) {
      const size_t n = ring.DequeueBurst(batch);
      if (n == 0) break;
      any = true;
      taken += n;
      for (size_t i = 0; i < n; ++i) {
        Msg& m = batch[i];
        if (m.type == MsgType::kPublish) {
          OnRoutedPublish(m);
        } else if (m.type == MsgType::kAck) {
          AckSouth(m.conn, int64_t(m.arg >> 16), uint16_t(m.arg & 0xffff), m.flags & kMsgFailed);
        } else if (m.type == MsgType::kDatagram) {
          stats_.cid_received.Inc();
          const auto b = m.bytes();
          if (b.size() > sizeof(quic::Path)) {
            quic::Path p;
            std::memcpy(&p, b.data(), sizeof(quic::Path));
            OnDatagram(p, b.subspan(sizeof(quic::Path)), now, emit, /*steer=*/false);
          }
        } else if (m.type == MsgType::kBlockReturn) {
          block_free_.push_back(reinterpret_cast<uint8_t*>(m.arg));
        } else {
          OnControlMsg(m, now);
        }
        if (m.flags & kMsgPooled) {  // back to its owner (never dropped: see FlushOutbox)
          Msg r = MakeMsg(MsgType::kBlockReturn, ConnRef{});
          r.arg = reinterpret_cast<uint64_t>(m.heap);
          r.src_core = config_.core;
          outbox_workers_[m.src_core].push_back(r);
        }
        ReleaseMsg(m);
      }
    }
  }
  return any;
}

void Worker::OnRoutedPublish(const Msg& m) {
  const bool has_origin = m.flags & kMsgHasOrigin;
  const Origin origin{m.conn, int64_t(m.arg >> 16), uint16_t(m.arg & 0xffff)};
  bool handled = false;
  mqtt::Framer f(mqtt::kMaxPacketSize);
  (void)f.Feed(m.bytes(), [&](const mqtt::Frame& fr) {
    mqtt::Publish p;
    if (!mqtt::DecodePublish(fr.header, fr.body, mqtt::Version::k5, &p).ok()) return false;
    handled = true;
    if (m.aux == kRouteAsPublished) {
      Route(*injector_, p, nullptr);
    } else if (m.aux != 0) {
      if (!PublishNorth(m.aux - 1, int(m.stream), p, now_, has_origin ? &origin : nullptr)) {
        stats_.drop_route_failed.Inc();
        if (has_origin) AckOrigin(origin, /*failed=*/true);
      }
    } else {
      DeliverSouth(m.conn, m.stream, p);
    }
    return false;
  });
  if (!handled && has_origin) AckOrigin(origin, /*failed=*/true);
}

void Worker::OnControlMsg(Msg& m, MonoNs now) {
  if (m.type == MsgType::kBridgeConnect) return DialBridge(m.aux, m.arg, size_t(m.stream), now);
  if (m.type == MsgType::kClose && !m.conn.valid()) {
    // The controlplane gave up on a dial it has no reference for yet.
    if (m.aux != 0 && m.aux - 1 < north_.size() && north_[m.aux - 1]) CloseConn(*north_[m.aux - 1], m.arg);
    return;
  }
  if (m.type == MsgType::kRemoveBridge) {
    if (m.aux < bstate_.size()) RetireBridge(m.aux);
    return;
  }
  if (m.type == MsgType::kAddBridge) {
    std::unique_ptr<BridgeDial> dial(reinterpret_cast<BridgeDial*>(m.arg));
    if (!dial || m.aux != config_.bridges.size()) return;  // out of step: never dialled
    if (absl::Status s = AddBridge(std::move(*dial)); !s.ok()) stats_.drop_stale_conn.Inc();
    return;
  }
  if (m.type == MsgType::kSnapshot) {
    routes_ = reinterpret_cast<const RouteSnapshot*>(m.arg);
    stats_.snapshots.Inc();
    Msg ack = MakeMsg(MsgType::kSnapshotAck, ConnRef{});
    ack.arg = routes_ ? routes_->version : 0;
    return ToControlplane(ack);
  }
  Conn* c = Lookup(m.conn);
  if (c == nullptr) {
    stats_.drop_stale_conn.Inc();
    return;
  }
  if (m.type == MsgType::kBridgeReady) {
    if (c->north && north_[c->bridge] == c) {
      bstate_[c->bridge].window = uint16_t(std::clamp<uint64_t>(m.arg, 1, 65535));
      OnBridgeReady(c->bridge);
    }
    return;
  }
  switch (m.type) {
    case MsgType::kWrite: {
      int64_t sid = m.stream;
      if (sid < 0) {
        const int k = BridgeDataSlotIndex(sid);
        sid = k >= 0 && size_t(k) < c->data_ids.size() ? c->data_ids[k] : 0;
      }
      stats_.control_from_cp.Inc();
      SendBytes(*c, sid, m.bytes());
      break;
    }
    case MsgType::kActivate: {
      c->activated = true;
      c->version = static_cast<mqtt::Version>(m.arg);
      if (m.aux != 0 && m.aux < 65535) c->inbound = mqtt::InboundQos(uint16_t(m.aux));
      c->out_window = uint16_t(std::clamp<int64_t>(m.stream, 1, 65535));
      std::vector<Conn::Held> held = std::move(c->held);
      c->held.clear();
      c->held_bytes = 0;
      for (const Conn::Held& h : held) {
        auto st = c->streams.find(h.sid);
        if (st == c->streams.end() || st->second->failed) continue;  // reset before CONNACK
        mqtt::Framer f(config_.max_packet_size);
        (void)f.Feed(h.bytes, [&](const mqtt::Frame& fr) {
          OnFrame(*c, h.sid, fr, now);
          return true;
        });
      }
      break;
    }
    case MsgType::kClose:
      if (c->close_at == 0) {
        c->close_at = now + kCloseLingerNs;
        c->close_error = m.arg;
        closing_.push_back(c->ref());
      }
      break;
    default:
      break;
  }
}

// --- MQTT on streams ---------------------------------------------------------------------------

void Worker::OnStreamData(Conn& c, int64_t sid, std::span<const uint8_t> data, bool fin,
                          MonoNs now) {
  Conn::Stream& st = c.stream(sid);
  if (st.failed) return;
  const mqtt::CodecStatus s = st.framer.Feed(data, [&](const mqtt::Frame& f) {
    OnFrame(c, sid, f, now);
    return !st.failed;
  });
  if (!s.ok()) {
    (s.code == mqtt::ReasonCode::kPacketTooLarge ? stats_.drop_mqtt_oversize
                                                  : stats_.drop_mqtt_malformed)
        .Inc();
    StreamError(c, sid, s.code);
    return;
  }
  if (fin && c.q) {
    if (sid == 0 && !c.north) {
      // The client ended its control stream: the MQTT connection is over (EMQX: app error 0).
      c.q->Close(kAppNoError);
    } else if (sid != 0) {
      // Peer FIN -> FIN (EMQX), once the PUBACKs owed on the stream have gone out.
      bool owed = false;
      for (const auto& [key, a] : c.e2e) owed |= int64_t(key >> 16) == sid;
      if (owed) {
        st.fin_pending = true;
      } else {
        (void)c.q->SendFin(sid);
      }
    }
  }
}

void Worker::OnFrame(Conn& c, int64_t sid, const mqtt::Frame& f, MonoNs now) {
  using T = mqtt::PacketType;
  stats_.mqtt_packets_in.Inc();
  const T type = f.type();
  if (!c.north) {
    ConnActivity& a = activity_->at(c.slot);
    ConnActivity::Stamp(a.last_rx, now);
    if (sid == 0) ConnActivity::Stamp(a.last_rx_control, now);
    if (type == T::kConnect) {
      if (sid != 0 || c.connect_seen) {
        stats_.drop_bad_stream.Inc();
        return StreamError(c, sid, mqtt::ReasonCode::kProtocolError);
      }
      c.connect_seen = true;
      stats_.control_to_cp.Inc();
      return ToControlplane(MakeMsg(MsgType::kControlPacket, c.ref(), sid, f.whole));
    }
    if (!c.activated) {
      // Before CONNACK the client may already send on any stream (EMQX keeps the streams
      // inactive until CONNECT is accepted): hold its packets, bounded.
      if (!c.connect_seen || c.held_bytes + f.whole.size() > config_.pre_activation_bytes) {
        stats_.drop_not_activated.Inc();
        if (!c.connect_seen) StreamError(c, sid, mqtt::ReasonCode::kProtocolError);
        return;
      }
      c.held.push_back(Conn::Held{sid, std::vector<uint8_t>(f.whole.begin(), f.whole.end())});
      c.held_bytes += f.whole.size();
      return;
    }
    if (IsControlType(type)) {
      stats_.control_to_cp.Inc();
      return ToControlplane(MakeMsg(MsgType::kControlPacket, c.ref(), sid, f.whole));
    }
  } else {
    if (type == T::kConnack || type == T::kSuback || type == T::kUnsuback ||
        type == T::kPingresp || type == T::kDisconnect || type == T::kAuth) {
      stats_.control_to_cp.Inc();
      return ToControlplane(MakeMsg(MsgType::kControlPacket, c.ref(), sid, f.whole));
    }
  }
  switch (type) {
    case T::kPublish:
      return OnPublish(c, sid, f);
    case T::kPuback:
    case T::kPubrec:
    case T::kPubcomp: {
      mqtt::PubAck ack;
      if (!mqtt::DecodePubAck(f.header, f.body, c.version, &ack).ok()) {
        stats_.drop_mqtt_malformed.Inc();
        return StreamError(c, sid, mqtt::ReasonCode::kMalformedPacket);
      }
      if (type == T::kPubrec) {
        // A failure reason ends the exchange there (no PUBREL, spec 4.3.3).
        if (uint8_t(ack.reason) >= 0x80) {
          if (c.north) return OnNorthAck(c, ack.packet_id, ack.reason);
          if (c.ids.Release(ack.packet_id)) DrainSouthQueue(c);
          return;
        }
        if (c.north) {
          BridgeState& b = bstate_[c.bridge];
          if (auto it = b.inflight.find(ack.packet_id); it != b.inflight.end()) it->second.released = true;
        }
        mqtt::PubAck rel;
        rel.type = T::kPubrel;
        rel.packet_id = ack.packet_id;
        SendPacket(c, sid, rel);
      } else if (c.north) {
        OnNorthAck(c, ack.packet_id, ack.reason);
      } else if (c.ids.Release(ack.packet_id)) {
        DrainSouthQueue(c);
      }
      return;
    }
    case T::kPubrel: {
      mqtt::PubAck rel;
      if (!mqtt::DecodePubAck(f.header, f.body, c.version, &rel).ok()) {
        stats_.drop_mqtt_malformed.Inc();
        return StreamError(c, sid, mqtt::ReasonCode::kMalformedPacket);
      }
      mqtt::PubAck comp;
      comp.type = T::kPubcomp;
      comp.packet_id = rel.packet_id;
      const mqtt::ReasonCode r = c.inbound.OnPubrel(uint64_t(sid), rel.packet_id);
      if (r == mqtt::ReasonCode::kProtocolError) return StreamError(c, sid, r);
      if (c.version == mqtt::Version::k5) comp.reason = r;
      SendPacket(c, sid, comp);
      return;
    }
    default:
      stats_.drop_bad_stream.Inc();
      return StreamError(c, sid, mqtt::ReasonCode::kProtocolError);
  }
}

void Worker::OnPublish(Conn& c, int64_t sid, const mqtt::Frame& f) {
  mqtt::Publish p;
  if (!mqtt::DecodePublish(f.header, f.body, c.version, &p).ok()) {
    stats_.drop_mqtt_malformed.Inc();
    return StreamError(c, sid, mqtt::ReasonCode::kMalformedPacket);
  }
  stats_.publish_in.Inc();
  stats_.publish_bytes_in.Inc(p.payload.size());
  if (c.north) {
    bridge_traffic_[c.bridge].rx_msgs.Inc();
    bridge_traffic_[c.bridge].rx_bytes.Inc(p.payload.size());
  }
  bool deliver = true;
  if (p.qos != mqtt::QoS::k0) {
    const mqtt::InboundDecision d = c.inbound.OnPublish(uint64_t(sid), p.qos, p.packet_id);
    if (d.kind == mqtt::InboundDecision::kReceiveMaxExceeded) {
      return StreamError(c, sid, mqtt::ReasonCode::kReceiveMaximumExceeded);
    }
    deliver = d.kind == mqtt::InboundDecision::kDeliver;
  }
  // QoS 1 from a south client is acknowledged end to end: only once every upstream it was
  // forwarded to has acknowledged it (local subscribers have it as soon as it is written).
  const bool e2e = p.qos == mqtt::QoS::k1 && !c.north;
  Origin origin{c.ref(), sid, p.packet_id};
  Routed routed;
  if (deliver) {
    if (on_delivery_) on_delivery_(Delivery{c.ref(), c.north, sid, &p});
    if (p.retain && !c.north) {
      // The controlplane keeps retained messages (and hands them to new subscribers).
      mqtt::Publish r = p;
      r.dup = false;
      r.packet_id = r.qos == mqtt::QoS::k0 ? 0 : 1;
      r.properties.topic_alias.reset();
      route_buf_.clear();
      if (mqtt::EncodeTo(r, mqtt::Version::k5, route_buf_)) {
        ToControlplane(MakeMsg(MsgType::kRetain, c.ref(), sid, route_buf_));
      }
    }
    routed = Route(c, p, e2e ? &origin : nullptr);
  } else if (e2e && c.e2e.contains(KeyOf(sid, p.packet_id))) {
    return;  // a resend while the upstream's ack is awaited: that ack answers both
  }
  if (p.qos == mqtt::QoS::k0) return;
  if (e2e && routed.awaiting > 0) {
    Conn::AwaitingAck& a = c.e2e[KeyOf(sid, p.packet_id)];
    a.outstanding = routed.awaiting;
    a.failed = routed.failed;
    return;
  }
  if (p.qos == mqtt::QoS::k1) return SendSouthAck(c, sid, p.packet_id, routed.failed);
  // QoS 2 is received exactly once here (PUBREC now, duplicates dropped until PUBREL) and
  // goes on as QoS 2 where the route allows it; the bridge's worker keeps it until the
  // upstream's PUBCOMP.
  mqtt::PubAck ack;
  ack.type = mqtt::PacketType::kPubrec;
  ack.packet_id = p.packet_id;
  SendPacket(c, sid, ack);
  c.inbound.OnAckSent(uint64_t(sid), p.packet_id, ack.reason);
}

void Worker::SendSouthAck(Conn& c, int64_t sid, uint16_t id, bool failed) {
  if (failed && c.version != mqtt::Version::k5) {
    // 3.x has no negative PUBACK, and a PUBACK would claim delivery: end the exchange without
    // one (the client sends the message again when it reconnects).
    c.inbound.OnAckSent(uint64_t(sid), id, mqtt::ReasonCode::kUnspecifiedError);
    return;
  }
  mqtt::PubAck ack;
  ack.type = mqtt::PacketType::kPuback;
  ack.packet_id = id;
  if (failed) ack.reason = mqtt::ReasonCode::kQuotaExceeded;
  SendPacket(c, sid, ack);
  c.inbound.OnAckSent(uint64_t(sid), id, ack.reason);
}

void Worker::AckOrigin(const Origin& o, bool failed) {
  if (!o.conn.valid()) return;
  if (o.conn.core == config_.core) return AckSouth(o.conn, o.stream, o.id, failed);
  Msg m = MakeMsg(MsgType::kAck, o.conn, o.stream);
  m.arg = KeyOf(o.stream, o.id);
  m.flags = failed ? kMsgFailed : 0;
  m.src_core = config_.core;
  outbox_workers_[o.conn.core].push_back(m);
}

void Worker::AckSouth(ConnRef ref, int64_t stream, uint16_t id, bool failed) {
  Conn* c = Lookup(ref);
  if (c == nullptr || c->north) return;  // gone: the client resends after reconnecting
  auto it = c->e2e.find(KeyOf(stream, id));
  if (it == c->e2e.end()) return;
  it->second.failed |= failed;
  if (--it->second.outstanding > 0) return;
  const bool any_failed = it->second.failed;
  c->e2e.erase(it);
  SendSouthAck(*c, stream, id, any_failed);
  if (auto st = c->streams.find(stream); st != c->streams.end() && st->second->fin_pending && c->q) {
    bool owed = false;
    for (const auto& [key, a] : c->e2e) owed |= int64_t(key >> 16) == stream;
    if (!owed) {
      st->second->fin_pending = false;
      (void)c->q->SendFin(stream);
    }
  }
}

void Worker::OnNorthAck(Conn& c, uint16_t id, mqtt::ReasonCode reason) {
  BridgeState& b = bstate_[c.bridge];
  auto it = b.inflight.find(id);
  if (it == b.inflight.end()) return;  // not ours (or acknowledged twice)
  const NorthMsg m = std::move(it->second);
  b.inflight.erase(it);
  b.ids.Release(id);
  if (uint8_t(reason) >= 0x80) bridge_traffic_[c.bridge].drop_refused.Inc();
  if (m.has_origin) AckOrigin(m.origin, uint8_t(reason) >= 0x80);
  ResendNorth(c.bridge);
  DrainNorthQueue(c.bridge);
}

void Worker::OnBridgeReady(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  b.ready = true;
  // Replay what the last connection left unacknowledged, in the order it first went out,
  // with DUP set and the same packet ids (spec 4.4). Beyond the upstream's Receive Maximum
  // the rest wait, ids kept, and go out as acks make room.
  std::vector<std::pair<uint64_t, uint16_t>> order;
  for (auto& [id, m] : b.inflight) order.emplace_back(m.seq, id);
  std::sort(order.begin(), order.end());
  b.resend.clear();
  for (const auto& [seq, id] : order) b.resend.push_back(id);
  ResendNorth(bridge);
  DrainNorthQueue(bridge);
}

// Sends again, oldest first, what a reconnect left unacknowledged, while the upstream's
// window has room: a PUBLISH copy with DUP, or past PUBREC (QoS 2) the PUBREL.
void Worker::ResendNorth(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  if (!b.ready || !BridgeUp(bridge)) return;
  Conn& c = *north_[bridge];
  // On the wire: in flight less what still waits to be resent (an id in `resend` may have
  // been answered already, so never below zero).
  auto on_wire = [&] { return b.inflight.size() > b.resend.size() ? b.inflight.size() - b.resend.size() : 0; };
  while (!b.resend.empty() && on_wire() < b.window) {
    const uint16_t id = b.resend.front();
    b.resend.pop_front();
    auto it = b.inflight.find(id);
    if (it == b.inflight.end()) continue;
    NorthMsg& m = it->second;
    const int64_t sid = m.slot >= 0 && size_t(m.slot) < c.data_ids.size() ? c.data_ids[m.slot] : 0;
    if (m.released) {
      mqtt::PubAck rel;
      rel.type = mqtt::PacketType::kPubrel;
      rel.packet_id = id;
      SendPacket(c, sid, rel, config_.bridges[bridge].version);
      continue;
    }
    // The last connection may still hold the old buffer: the replay is a copy, with DUP.
    m.packet = pool_.Copy(m.packet.span());
    m.packet.mutable_span()[0] |= 0x08;
    SendBuffer(c, sid, m.packet);
  }
}

// A reload removed the bridge: what it holds is refused (its publishers hear of it) and
// nothing more is taken for it.
void Worker::RetireBridge(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  b.removed = true;
  b.ready = false;
  BridgeTraffic& bt = bridge_traffic_[bridge];
  for (auto& [id, m] : b.inflight) {
    bt.drop_removed.Inc();
    if (m.has_origin) AckOrigin(m.origin, /*failed=*/true);
  }
  for (NorthMsg& m : b.queued) {
    bt.drop_removed.Inc();
    if (m.has_origin) AckOrigin(m.origin, /*failed=*/true);
  }
  b.inflight.clear();
  b.queued.clear();
  b.resend.clear();
}

void Worker::DrainNorthQueue(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  while (b.ready && !b.queued.empty()) {
    if (!SendNorth(bridge, b.queued.front(), false)) break;  // window or ids full: wait for acks
    b.queued.pop_front();
  }
}

bool Worker::SendNorth(uint32_t bridge, NorthMsg& m, bool dup) {
  BridgeState& b = bstate_[bridge];
  if (!b.ready || !BridgeUp(bridge)) return false;
  if (!b.resend.empty() || b.inflight.size() >= b.window) return false;  // the upstream's Receive Maximum
  auto id = b.ids.Allocate();
  if (!id) return false;
  SetPacketId(m.packet, m.id_offset, *id);  // not shared yet: patch in place
  if (dup) m.packet.mutable_span()[0] |= 0x08;
  Conn& c = *north_[bridge];
  const int64_t sid = m.slot >= 0 && size_t(m.slot) < c.data_ids.size() ? c.data_ids[m.slot] : 0;
  SendBuffer(c, sid, m.packet);
  b.inflight.emplace(*id, std::move(m));
  return true;
}

size_t Worker::NorthPending(uint32_t bridge) const {
  return bridge < bstate_.size() ? bstate_[bridge].inflight.size() + bstate_[bridge].queued.size() : 0;
}

Worker::Routed Worker::Route(const Conn& from, const mqtt::Publish& in, const Origin* origin) {
  Routed out_r;
  if (routes_ == nullptr) {
    stats_.drop_no_route.Inc();
    return out_r;
  }
  mqtt::Publish p = in;
  p.dup = false;
  p.packet_id = 0;
  p.properties.topic_alias.reset();
  std::optional<std::string> local;
  if (from.north) {
    // A delivery from an upstream: its subscription rule maps the topic to a local one.
    for (const InboundRoute& r : routes_->inbound) {
      if (r.bridge == from.bridge && mqtt::TopicMatches(r.remote_filter, in.topic)) {
        if (r.rewrite.identity()) break;
        local = r.rewrite.Apply(in.topic);
        if (!local) {
          stats_.drop_no_route.Inc();
          return out_r;
        }
        p.topic = *local;
        break;
      }
    }
  }
  bool any = false;
  routes_->trie.Match(p.topic, [&](const mqtt::TopicTrie<RouteKey, RouteValue>::Entry& e) {
    mqtt::Publish out = p;
    if (e.key.kind == RouteKey::kForward) {
      if (from.north) return;  // never back upstream: no bridge loops
      const ForwardRoute& f = routes_->forwards[e.key.rule];
      std::optional<std::string> remote;  // no string built when the rule keeps the topic
      if (!f.rewrite.identity()) {
        remote = f.rewrite.Apply(p.topic);
        if (!remote) return stats_.drop_route_failed.Inc();
        out.topic = *remote;
      }
      out.qos = std::min(p.qos, f.qos);
      out.retain = f.retain && p.retain;
      any = true;
      const Origin* o = out.qos == mqtt::QoS::k0 ? nullptr : origin;
      if (f.core == config_.core) {
        if (PublishNorth(f.bridge, f.slot, out, now_, o)) {
          stats_.routed_north.Inc();
          if (o) ++out_r.awaiting;
        } else {
          stats_.drop_route_failed.Inc();
          if (o) out_r.failed = true;
        }
      } else {
        if (PostPublish(f.core, ConnRef{}, f.slot, f.bridge + 1, out, o)) {
          stats_.routed_north.Inc();
          if (o) ++out_r.awaiting;  // that core acknowledges, or reports the failure
        } else if (o) {
          out_r.failed = true;
        }
      }
      return;
    }
    if (e.value.no_local && e.key.conn == from.ref()) return;
    out.qos = std::min(p.qos, e.value.qos);
    out.retain = false;  // retained flag only on retained-message delivery (not kept yet)
    any = true;
    if (e.key.conn.core == config_.core) {
      if (DeliverSouth(e.key.conn, e.key.stream, out)) stats_.routed_south.Inc();
    } else {
      PostPublish(e.key.conn.core, e.key.conn, e.key.stream, 0, out);
      stats_.routed_south.Inc();
    }
  });
  if (!any) stats_.drop_no_route.Inc();
  return out_r;
}

bool Worker::DeliverSouth(ConnRef to, int64_t stream, const mqtt::Publish& p) {
  Conn* c = Lookup(to);
  if (c == nullptr || c->north || !c->activated || c->close_at) {
    stats_.drop_route_failed.Inc();
    return false;
  }
  mqtt::Publish out = p;
  if (out.qos != mqtt::QoS::k0) {
    // The client's Receive Maximum bounds what it has unacknowledged; beyond it deliveries
    // wait in order (up to max_mqueue_len) for its acks.
    if (c->ids.in_use() >= c->out_window || !c->out_queue.empty()) {
      if (c->out_queue.size() >= config_.max_mqueue_len) {
        stats_.drop_client_queue_full.Inc();
        return false;
      }
      out.packet_id = 1;  // patched when sent
      quic::Buffer buf = Encode(out, c->version);
      if (!buf) {
        stats_.drop_route_failed.Inc();
        return false;
      }
      const size_t offset = PacketIdOffset(buf, out.topic.size());
      c->out_queue.push_back(Conn::QueuedDelivery{stream, std::move(buf), offset});
      stats_.publish_out.Inc();
      stats_.publish_bytes_out.Inc(p.payload.size());
      return true;
    }
    auto id = c->ids.Allocate();
    if (!id) {
      stats_.drop_route_failed.Inc();
      return false;
    }
    out.packet_id = *id;
  }
  if (!SendPacket(*c, stream, out)) {
    if (out.qos != mqtt::QoS::k0) c->ids.Release(out.packet_id);
    stats_.drop_route_failed.Inc();
    return false;
  }
  stats_.publish_out.Inc();
  stats_.publish_bytes_out.Inc(p.payload.size());
  return true;
}

// A south client acknowledged a delivery: what waited for its window goes out, in order.
void Worker::DrainSouthQueue(Conn& c) {
  while (!c.out_queue.empty() && c.ids.in_use() < c.out_window) {
    Conn::QueuedDelivery& d = c.out_queue.front();
    if (c.streams.find(d.sid) == c.streams.end()) {  // its stream is gone: so is the delivery
      stats_.drop_route_failed.Inc();
      c.out_queue.pop_front();
      continue;
    }
    auto id = c.ids.Allocate();
    if (!id) return;
    SetPacketId(d.packet, d.id_offset, *id);
    SendBuffer(c, d.sid, std::move(d.packet));
    c.out_queue.pop_front();
  }
}

bool Worker::PostPublish(uint16_t core, ConnRef to, int64_t stream, uint32_t aux,
                         const mqtt::Publish& p, const Origin* origin) {
  // The receiving core numbers the message for its own connection; QoS 1 and 2 cannot be
  // encoded without a packet identifier, so the copy on the ring carries a placeholder.
  const mqtt::Publish* carried = &p;
  mqtt::Publish numbered;
  if (p.qos != mqtt::QoS::k0 && p.packet_id == 0) {
    numbered = p;
    numbered.packet_id = 1;
    carried = &numbered;
  }
  // Encoded straight into the block the message hands over.
  const size_t n = mqtt::EncodedSize(*carried, mqtt::Version::k5);
  if (n == 0) {
    stats_.drop_route_failed.Inc();
    return false;
  }
  Msg m = MakeMsg(MsgType::kPublish, to, stream);
  uint8_t* dst = AttachBytes(m, n);
  if (mqtt::Encode(*carried, mqtt::Version::k5, std::span<uint8_t>(dst, n)) != n) {
    if (m.flags & kMsgPooled) block_free_.push_back(m.heap);
    ReleaseMsg(m);
    stats_.drop_route_failed.Inc();
    return false;
  }
  m.aux = aux;
  if (origin) {
    m.flags |= kMsgHasOrigin;
    m.conn = origin->conn;
    m.arg = KeyOf(origin->stream, origin->id);
  }
  stats_.routed_cross_core.Inc();
  outbox_workers_[core].push_back(m);
  return true;
}

bool Worker::SendPacket(Conn& c, int64_t sid, const mqtt::Packet& p) {
  return SendPacket(c, sid, p, c.version);
}

bool Worker::SendPacket(Conn& c, int64_t sid, const mqtt::Packet& p, mqtt::Version v) {
  quic::Buffer buf = Encode(p, v);
  if (!buf) return false;
  SendBuffer(c, sid, std::move(buf));
  return true;
}

quic::Buffer Worker::Encode(const mqtt::Packet& p, mqtt::Version v) {
  const size_t n = mqtt::EncodedSize(p, v);
  if (n == 0) return {};
  quic::Buffer buf = pool_.Get(n);
  if (mqtt::Encode(p, v, buf.mutable_span()) != n) return {};
  return buf;
}

void Worker::SendBuffer(Conn& c, int64_t sid, quic::Buffer buf) {
  if (c.tcp) {
    const std::span<const uint8_t> bytes = buf.span();
    if (c.fd < 0 || c.tcp_close || c.tcp_connecting) return;
    // A peer that stops reading is cut off rather than buffered without bound.
    if (c.tx.size() - c.tx_off > (16u << 20)) return CloseConn(c, kAppNoError);
    c.tx.insert(c.tx.end(), bytes.begin(), bytes.end());
    TcpFlush(c);
    stats_.mqtt_packets_out.Inc();
    ConnActivity::Stamp(activity_->at(c.slot).last_tx_control, now_);
    ConnActivity::Stamp(activity_->at(c.slot).last_control_wire, now_);
    return;
  }
  if (c.q == nullptr) return;
  if (!c.q->Send(sid, std::move(buf)).ok()) return;
  stats_.mqtt_packets_out.Inc();
  if (sid == 0) ConnActivity::Stamp(activity_->at(c.slot).last_tx_control, now_);
}

void Worker::StreamError(Conn& c, int64_t sid, mqtt::ReasonCode why) {
  if (auto it = c.streams.find(sid); it != c.streams.end()) it->second->failed = true;
  if (sid == 0) {
    // The control stream cannot be resynchronised: the MQTT connection ends (EMQX sends
    // DISCONNECT, then closes with app error 1).
    if (c.version == mqtt::Version::k5 && !c.north) {
      mqtt::Disconnect d;
      d.reason = why;
      SendPacket(c, 0, d);
    }
    CloseConn(c, kAppCtrlStreamDown);
  } else {
    // Only that data stream closes (EMQX: malformed or oversized on a data stream).
    c.q->ResetStream(sid, uint64_t(why));
  }
}

void Worker::CloseConn(Conn& c, uint64_t app_error) {
  if (c.tcp) {
    if (!c.tcp_close) {
      c.tcp_close = true;
      tcp_closing_.push_back(c.ref());
    }
    return;
  }
  if (c.q) c.q->Close(app_error);
  if (c.north) c.dead = true;
}

// --- TCP ---------------------------------------------------------------------------------------

namespace {
constexpr int kMaxTcpEvents = 64;
constexpr size_t kTcpReadBytes = 64 * 1024;
constexpr int kMaxReadsPerEvent = 4;  // per connection per iteration: fairness
}  // namespace

void Worker::TcpWatch(Conn& c, bool out) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (out ? uint32_t(EPOLLOUT) : 0u);
  ev.data.u32 = c.slot;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.tcp_out = out;
}

size_t Worker::PollTcp(MonoNs now) {
  epoll_event evs[kMaxTcpEvents];
  const int n = ::epoll_wait(epoll_fd_, evs, kMaxTcpEvents, 0);
  for (int i = 0; i < n; ++i) {
    const uint32_t tag = evs[i].data.u32;
    if (tag == kListenTag) {
      TcpAccept(now);
      continue;
    }
    Conn* c = tag < slots_.size() ? slots_[tag].get() : nullptr;
    if (c == nullptr || c->fd < 0 || c->tcp_close) continue;
    const uint32_t e = evs[i].events;
    if (c->tcp_connecting) {
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0 || (e & (EPOLLERR | EPOLLHUP))) {
        CloseConn(*c, kAppNoError);
        continue;
      }
      c->tcp_connecting = false;
      c->streams_open = true;  // one stream: every slot writes on it
      TcpWatch(*c, false);
      Msg m = MakeMsg(MsgType::kBridgeUp, c->ref());
      m.aux = c->bridge;
      m.arg = c->dial;
      ToControlplane(m);
      continue;
    }
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) TcpRead(*c, now);
    if (c->fd >= 0 && !c->tcp_close && (e & EPOLLOUT)) TcpFlush(*c);
  }
  return n > 0 ? size_t(n) : 0;
}

void Worker::TcpAccept(MonoNs now) {
  for (int i = 0; i < kMaxTcpEvents; ++i) {
    const int fd = ::accept4(config_.tcp_listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    // The last slots are the bridges': south clients never take them.
    Conn* c = live_conns_ + north_reserved_ < config_.max_conns ? AllocConn(/*north=*/false, 0)
                                                                         : nullptr;
    if (c == nullptr) {
      ::close(fd);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->tcp = true;
    activity_->at(c->slot).Reset(now);
    awaiting_connect_.emplace_back(c->ref(), now + kConnectTimeoutNs);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = c->slot;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    stats_.conns_opened.Inc();
  }
}

void Worker::TcpRead(Conn& c, MonoNs now) {
  uint8_t buf[kTcpReadBytes];
  for (int i = 0; i < kMaxReadsPerEvent && !c.tcp_close; ++i) {
    const ssize_t n = ::recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      stats_.rx_bytes.Inc(size_t(n));
      OnStreamData(c, 0, std::span<const uint8_t>(buf, size_t(n)), false, now);
      if (size_t(n) < sizeof(buf)) return;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    CloseConn(c, kAppNoError);  // EOF or error: the connection is over
    return;
  }
}

void Worker::TcpFlush(Conn& c) {
  while (c.tx_off < c.tx.size()) {
    const ssize_t n = ::send(c.fd, c.tx.data() + c.tx_off, c.tx.size() - c.tx_off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      c.tx_off += size_t(n);
      stats_.tx_bytes.Inc(size_t(n));
      continue;
    }
    if (c.tx_off > (64u << 10) && c.tx_off * 2 > c.tx.size()) {  // keep the buffer bounded
      c.tx.erase(c.tx.begin(), c.tx.begin() + long(c.tx_off));
      c.tx_off = 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c.tcp_out) TcpWatch(c, true);
      return;
    }
    if (n < 0 && errno == EINTR) continue;
    return CloseConn(c, kAppNoError);
  }
  c.tx.clear();
  c.tx_off = 0;
  if (c.tcp_out) TcpWatch(c, false);
}

void Worker::DialTcpBridge(Conn& c, const BridgeDial& d) {
  const int fd = ::socket(d.remote.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return OnNorthClosed(&c);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c.fd = fd;
  c.tcp = true;
  c.tcp_connecting = true;
  c.version = d.version;
  north_[c.bridge] = &c;
  activity_->at(c.slot).Reset(now_);
  stats_.conns_opened.Inc();
  if (::connect(fd, d.remote.sa(), d.remote.len) != 0 && errno != EINPROGRESS) {
    c.tcp_connecting = false;
    return CloseConn(c, kAppNoError);
  }
  epoll_event ev{};
  ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
  ev.data.u32 = c.slot;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  c.tcp_out = true;
}

void Worker::FinishTcpCloses() {
  std::vector<ConnRef> now_closing;
  now_closing.swap(tcp_closing_);
  for (const ConnRef& r : now_closing) {
    Conn* c = Lookup(r);
    if (c == nullptr || !c->tcp) continue;
    if (c->fd >= 0 && c->tx_off < c->tx.size() && !c->tcp_connecting) {
      // Last words (CONNACK refusal, DISCONNECT): one more non-blocking try, then close.
      (void)::send(c->fd, c->tx.data() + c->tx_off, c->tx.size() - c->tx_off, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    if (c->north) {
      OnNorthClosed(c);
    } else {
      Msg m = MakeMsg(MsgType::kConnClosed, c->ref());
      ToControlplane(m);
      FreeConn(c);
    }
  }
}

bool Worker::PublishNorth(uint32_t bridge, int slot, const mqtt::Publish& p, MonoNs now,
                          const Origin* origin) {
  if (bridge >= bstate_.size()) return false;
  now_ = now;
  BridgeState& b = bstate_[bridge];
  const mqtt::Version v = config_.bridges[bridge].version;
  const bool ready = b.ready && BridgeUp(bridge);
  BridgeTraffic& bt = bridge_traffic_[bridge];
  if (b.removed) return bt.drop_removed.Inc(), false;
  if (p.qos == mqtt::QoS::k0) {
    if (!ready) return bt.drop_bridge_down.Inc(), false;
    Conn& c = *north_[bridge];
    const int64_t sid = slot >= 0 && size_t(slot) < c.data_ids.size() ? c.data_ids[slot] : 0;
    if (!SendPacket(c, sid, p, v)) return bt.drop_not_encodable.Inc(), false;
  } else {
    if (b.inflight.size() + b.queued.size() >= config_.bridges[bridge].max_queue)
      return bt.drop_queue_full.Inc(), false;
    NorthMsg m;
    m.slot = slot;
    m.seq = b.seq++;
    if (origin) {
      m.origin = *origin;
      m.has_origin = true;
    }
    mqtt::Publish out = p;
    out.qos = p.qos == mqtt::QoS::k2 ? mqtt::QoS::k2 : mqtt::QoS::k1;  // the rule's QoS, at most
    out.dup = false;
    out.packet_id = 1;  // patched when sent
    m.packet = Encode(out, v);
    if (!m.packet) return bt.drop_not_encodable.Inc(), false;
    m.id_offset = PacketIdOffset(m.packet, out.topic.size());
    if (!ready || !b.queued.empty() || !SendNorth(bridge, m, false)) b.queued.push_back(std::move(m));
  }
  stats_.publish_out.Inc();
  stats_.publish_bytes_out.Inc(p.payload.size());
  bridge_traffic_[bridge].tx_msgs.Inc();
  bridge_traffic_[bridge].tx_bytes.Inc(p.payload.size());
  return true;
}

uint64_t Worker::NorthBuffered(uint32_t bridge, int slot) const {
  if (!BridgeUp(bridge)) return 0;
  const Conn& c = *north_[bridge];
  if (c.tcp) return c.tx.size() - c.tx_off;
  const int64_t sid = slot >= 0 && size_t(slot) < c.data_ids.size() ? c.data_ids[slot] : 0;
  return c.q->BufferedBytes(sid);
}

void Worker::ToControlplane(Msg m) {
  m.src_core = config_.core;
  outbox_cp_.push_back(m);
}

// --- timers and output -------------------------------------------------------------------------

MonoNs Worker::NextDeadline() const {
  MonoNs t = endpoint_ ? endpoint_->Expiry() : kNeverNs;
  if (!awaiting_connect_.empty()) t = std::min(t, awaiting_connect_.front().second);
  for (const ConnRef& r : closing_) {
    const Conn* c = r.slot < slots_.size() ? slots_[r.slot].get() : nullptr;  // may be null
    if (c && c->gen == r.gen && c->close_at) t = std::min(t, c->close_at);
  }
  for (const Conn* c : north_) {
    if (c && c->q) t = c->dead ? 0 : std::min(t, c->q->Expiry());
  }
  return t;
}

void Worker::RunPendingCloses(MonoNs now) {
  for (size_t i = 0; i < closing_.size();) {
    Conn* c = Lookup(closing_[i]);
    // Close once the control stream's bytes are acknowledged, or at the linger deadline.
    const bool draining =
        c != nullptr && (c->tcp ? c->tx_off < c->tx.size()
                                : c->q->BufferedBytes(0) > 0 &&
                                      c->q->state() == quic::Connection::State::kEstablished);
    if (c != nullptr && now < c->close_at && draining) {
      ++i;
      continue;
    }
    if (c != nullptr) CloseConn(*c, c->close_error);
    closing_[i] = closing_.back();
    closing_.pop_back();
  }
}

void Worker::RunTimers(MonoNs now) {
  if (!closing_.empty()) RunPendingCloses(now);
  while (!awaiting_connect_.empty() && awaiting_connect_.front().second <= now) {
    Conn* c = Lookup(awaiting_connect_.front().first);
    awaiting_connect_.pop_front();
    if (c != nullptr && !c->connect_seen) {
      stats_.drop_connect_timeout.Inc();
      CloseConn(*c, kAppCtrlStreamDown);
    }
  }
  if (endpoint_ && endpoint_->Expiry() <= now) endpoint_->HandleExpiry(now);
  for (Conn* c : north_) {
    if (c && c->q && c->q->Expiry() <= now && !c->q->HandleExpiry(now)) c->dead = true;
  }
}

const quic::Path* Worker::NorthPath(size_t bridge) const {
  const Conn* c = north_[bridge];
  return c && c->q ? &c->q->path() : nullptr;
}

void Worker::WriteAll(MonoNs now, Emit emit) {
  if (endpoint_) endpoint_->WriteAll(now, scratch_, kMaxDatagramsPerConn, emit);
  for (size_t b = 0; b < north_.size(); ++b) {
    Conn* c = north_[b];
    if (c == nullptr || c->q == nullptr) continue;  // TCP bridges write as they go
    quic::Connection& q = *c->q;
    if (!north_hold_[b]) WriteNorth(c, b, now, emit);
    if (c->dead || q.state() == quic::Connection::State::kClosing ||
        q.state() == quic::Connection::State::kDraining ||
        q.state() == quic::Connection::State::kClosed) {
      OnNorthClosed(c);
    }
  }
}

// Held while the next hop is unresolved, a bridge's timers still run: a hop that never
// answers ends in the handshake timeout as a silent upstream would.
void Worker::WriteNorth(Conn* c, size_t b, MonoNs now, Emit emit) {
  quic::Connection& q = *c->q;
  // The control-first promise, checked on every write: data must not leave while
  // control bytes wait (counted; tests assert it stays 0).
  const uint64_t ctrl_before = q.SentBytes(0);
  const uint64_t ctrl_unsent = c->streams_open ? q.UnsentBytes(0) : 0;
  uint64_t data_before = 0;
  for (int64_t id : c->data_ids) data_before += q.SentBytes(id);
  q.Write(now, scratch_, kMaxDatagramsPerConn, emit);
  if (ctrl_unsent > 0 && q.UnsentBytes(0) > 0) {
    uint64_t data_after = 0;
    for (int64_t id : c->data_ids) data_after += q.SentBytes(id);
    if (data_after != data_before) ++control_overtaken_;
  }
  const uint64_t ctrl_after = q.SentBytes(0);
  if (ctrl_after != ctrl_before) {
    ConnActivity::Stamp(activity_->at(c->slot).last_control_wire, now);
  }
  c->control_sent = ctrl_after;
  const quic::Connection::PathInfo pi = q.path_info();
  BridgeTraffic& bt = bridge_traffic_[b];
  bt.srtt_ns.Set(pi.smoothed_rtt_ns);
  bt.min_rtt_ns.Set(pi.min_rtt_ns);
  bt.cwnd_bytes.Set(pi.cwnd_bytes);
  bt.bytes_in_flight.Set(pi.bytes_in_flight);
}

void Worker::FlushOutbox() {
  if (!outbox_cp_.empty()) {
    MsgRing& r = rings_->ring(config_.core, rings_->cp());
    const size_t n = r.EnqueueBurst(outbox_cp_);
    // Control packets the controlplane cannot take now wait for the next iteration (the
    // QUIC stream's flow control holds the rest back); they are never dropped.
    outbox_cp_.erase(outbox_cp_.begin(), outbox_cp_.begin() + long(n));
  }
  for (size_t w = 0; w < outbox_workers_.size(); ++w) {
    auto& box = outbox_workers_[w];
    if (box.empty()) continue;
    const size_t n = rings_->ring(config_.core, w).EnqueueBurst(box);
    // What the ring cannot take now: forwarded datagrams are dropped and counted (QUIC
    // recovers); PUBLISHes and acks wait for the next iteration, in order, never dropped.
    size_t kept = 0;
    for (size_t i = n; i < box.size(); ++i) {
      if (box[i].type == MsgType::kDatagram) {
        stats_.drop_ring_full.Inc();
        if (box[i].flags & kMsgPooled) block_free_.push_back(box[i].heap);
        ReleaseMsg(box[i]);
      } else {
        box[kept++] = box[i];
      }
    }
    box.resize(kept);
  }
}

}  // namespace qbridge::dp
