// The north bridge client on this worker: dialling an upstream (QUIC, with 0-RTT when a
// ticket is held, or TCP), opening its control and data streams, and the custody of every
// QoS 1/2 message for it: encoded once, held while the bridge is down or its window is full,
// numbered and sent, kept until the upstream's PUBACK/PUBCOMP, replayed with DUP after a
// reconnect, refused back to its publishers when a reload removes the bridge. Also the
// bridge's write phase (the control-first check). Keepalive timing is the controlplane's:
// nothing here decides when a PINGREQ goes out.

#include "dataplane/worker/worker.h"

#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <cstdio>

#include "dataplane/udp_socket.h"
#include "dataplane/worker/conn.h"

namespace qbridge::dp {

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
    d.pick_source = a.pick_source;
    d.tls = a.tls;
  }
  if (!d.tcp && d.pick_source && !d.local.empty()) {
    // The source address the kernel would use now, on the bridge socket's port.
    const in_port_t port = reinterpret_cast<const sockaddr_in*>(&d.local.storage)->sin_port;
    d.local = KernelSourceFor(d.remote);
    if (!d.local.empty()) reinterpret_cast<sockaddr_in*>(&d.local.storage)->sin_port = port;
  }
  if (!d.tcp && d.local.empty()) {  // no route now, or no bridge socket of its family
    if (no_route_logged_.insert(bridge).second) {
      std::fprintf(stderr, "qbridge: bridge %u: no route to %s (or no bridge socket of its family); "
                   "dialling again with backoff\n", bridge, d.remote.ToString().c_str());
    }
    Msg m = MakeMsg(MsgType::kConnClosed, ConnRef{config_.core, 0, UINT32_MAX}, int64_t(dial));
    m.aux = bridge + 1;
    ToControlplane(m);
    return;
  }
  if (!d.tcp) no_route_logged_.erase(bridge);
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
  if (scratch_.size() < kMaxNorthDatagrams * dial.transport.max_udp_payload)
    scratch_.resize(kMaxNorthDatagrams * dial.transport.max_udp_payload);
  config_.bridges.push_back(std::move(dial));
  north_.push_back(nullptr);
  north_hold_.push_back(0);
  bstate_.emplace_back();
  for (uint32_t id = kControlPacketIdFirst; id <= 65535; ++id) bstate_.back().ids.Reserve(uint16_t(id));
  tickets_.emplace_back();
  const BridgeDial& added = config_.bridges.back();
  if (added.store.on && added.worker == config_.core) {
    const uint32_t index = uint32_t(config_.bridges.size() - 1);
    if (absl::Status s = OpenStore(index); !s.ok()) {
      if (initializing_) return s;  // start-up: the appliance does not run without it
      // A reload: meanwhile the bridge runs with memory custody (publishers hear of the
      // upstream's ack). A log still held by the worker that had the bridge before is
      // opened again until that worker lets it go.
      const bool in_use = s.code() == absl::StatusCode::kFailedPrecondition;
      std::fprintf(stderr, "qbridge: %s: its messages are held in memory only%s\n",
                   std::string(s.message()).c_str(), in_use ? " until it is free" : "");
      if (in_use) {
        store_retry_.emplace_back(index, SystemClock().Now() + kStoreRetryNs);
      } else {
        bridge_traffic_[index].store_io_errors.Inc();
      }
    }
  }
  return absl::OkStatus();
}

void Worker::OnNorthClosed(Conn* c) {
  bstate_[c->bridge].ready = false;  // what is in flight is replayed on the next connection
  BridgeTraffic& bt = bridge_traffic_[c->bridge];
  bt.srtt_ns.Set(0), bt.min_rtt_ns.Set(0), bt.cwnd_bytes.Set(0), bt.bytes_in_flight.Set(0);
  if (c->q && c->q->ticket()) tickets_[c->bridge] = *c->q->ticket();
  if (c->close_at) c->close_at = 0;
  Msg m = MakeMsg(MsgType::kConnClosed, c->ref(), int64_t(c->dial),
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(c->why.data()), c->why.size()));
  m.aux = c->bridge + 1;
  m.arg = c->q && c->q->peer_closed() ? c->q->peer_app_error() : kAppNoError;
  ToControlplane(m);
  if (north_[c->bridge] == c) north_[c->bridge] = nullptr;
  FreeConn(c);
}

bool Worker::BridgeUp(uint32_t bridge) const {
  return bridge < north_.size() && north_[bridge] && north_[bridge]->streams_open;
}

void Worker::OnNorthAck(Conn& c, uint16_t id, mqtt::ReasonCode reason) {
  BridgeState& b = bstate_[c.bridge];
  auto it = b.inflight.find(id);
  if (it == b.inflight.end()) return;  // not ours (or acknowledged twice)
  const NorthMsg m = std::move(it->second);
  b.inflight.erase(it);
  b.ids.Release(id);
  if (uint8_t(reason) >= 0x80) bridge_traffic_[c.bridge].drop_refused.Inc();
  ReleaseStored(c.bridge, m);  // the upstream has it (or refused it for good)
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
    bridge_traffic_[bridge].resent.Inc();
  }
}

// A reload removed the bridge: what it holds in memory only is refused (its publishers hear
// of it) and nothing more is taken for it. What its custody log holds stays there for a
// bridge of the same name.
void Worker::RetireBridge(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  b.removed = true;
  b.ready = false;
  // The log closes first, its commits finished: a message whose commit fails goes back to
  // memory custody and is refused below, never acknowledged as stored.
  CloseStore(bridge);
  BridgeTraffic& bt = bridge_traffic_[bridge];
  auto retire = [&](NorthMsg& m) {
    if (m.store_seq != 0 && !m.has_origin) return;  // committed: kept on disk
    bt.drop_removed.Inc();
    if (m.has_origin) AckOrigin(m.origin, /*failed=*/true);
  };
  for (auto& [id, m] : b.inflight) retire(m);
  for (NorthMsg& m : b.queued) retire(m);
  b.inflight.clear();
  b.queued.clear();
  b.queued_qos0 = 0;
  b.resident_bytes = 0;
  b.resend.clear();
}

void Worker::DrainNorthQueue(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  while (b.ready && !b.queued.empty()) {
    NorthMsg& m = b.queued.front();
    if (!m.packet && !LoadStored(bridge, m)) {  // on disk only, and unreadable: counted
      Dequeued(bridge, m);
      b.queued.pop_front();
      continue;
    }
    const bool qos0 = m.qos0;
    const size_t resident = m.store_seq ? m.packet.size() : 0;
    if (!SendNorth(bridge, m, false)) break;  // window or ids full: wait for acks
    b.resident_bytes -= std::min<uint64_t>(resident, b.resident_bytes);
    if (qos0) --b.queued_qos0;
    b.queued.pop_front();
  }
}

bool Worker::SendNorth(uint32_t bridge, NorthMsg& m, bool dup) {
  BridgeState& b = bstate_[bridge];
  if (!b.ready || !BridgeUp(bridge)) return false;
  Conn& c = *north_[bridge];
  const int64_t sid = m.slot >= 0 && size_t(m.slot) < c.data_ids.size() ? c.data_ids[m.slot] : 0;
  if (m.qos0) {  // a stored QoS 0 message: no id, no ack; done once handed to the connection
    if (NorthSlotFull(bridge, m.slot)) return false;  // waits until the slot drains (PollStores)
    SendBuffer(c, sid, m.packet);
    ReleaseStored(bridge, m);
    return true;
  }
  if (!b.resend.empty() || b.inflight.size() >= b.window) return false;  // the upstream's Receive Maximum
  auto id = b.ids.Allocate();
  if (!id) return false;
  SetPacketId(m.packet, m.id_offset, *id);  // not shared yet: patch in place
  if (dup) m.packet.mutable_span()[0] |= 0x08;
  if (m.packet[0] & 0x08) bridge_traffic_[bridge].resent.Inc();  // recovered from the store
  SendBuffer(c, sid, m.packet);
  b.inflight.emplace(*id, std::move(m));
  return true;
}

void Worker::BridgeGauges(MonoNs now) {
  bridge_gauges_at_ = now;
  std::array<uint32_t, kMaxBridges> held{};
  for (const HeldBack& h : held_back_)
    if (h.bridge < held.size()) ++held[h.bridge];
  for (size_t i = 0; i < bstate_.size(); ++i) {
    bridge_traffic_[i].inflight.Set(bstate_[i].inflight.size());
    bridge_traffic_[i].queued.Set(bstate_[i].queued.size());
    bridge_traffic_[i].held_back.Set(held[i]);
  }
}

size_t Worker::NorthPending(uint32_t bridge) const {
  return bridge < bstate_.size() ? bstate_[bridge].inflight.size() + bstate_[bridge].queued.size() : 0;
}

bool Worker::PublishNorth(uint32_t bridge, int slot, const mqtt::Publish& p, MonoNs now,
                          const Origin* origin) {
  if (bridge >= bstate_.size()) return false;
  now_ = now;
  BridgeState& b = bstate_[bridge];
  const BridgeDial& d = config_.bridges[bridge];
  const mqtt::Version v = d.version;
  const bool ready = b.ready && BridgeUp(bridge);
  BridgeTraffic& bt = bridge_traffic_[bridge];
  if (b.removed) return bt.drop_removed.Inc(), false;
  // QoS 0 waits in the connection's buffer while the uplink is slower than what comes in, up
  // to a bound (NorthQos0Bound): beyond it, it is dropped (counted as the queue being full),
  // or with store_qos0 it goes to the log, so a flood into a slow uplink cannot grow the
  // edge's memory without bound. Over half of it, whoever sent it is held back (HoldBack).
  const uint64_t bound = ready ? NorthQos0Bound(bridge) : 0;
  const uint64_t buffered = p.qos == mqtt::QoS::k0 && ready ? NorthBuffered(bridge, slot) : 0;
  const bool full = p.qos == mqtt::QoS::k0 && ready && buffered > bound;
  // Stored QoS 0 keeps its place behind what the log holds; otherwise QoS 0 goes now or never.
  const bool store_qos0 = b.log && d.store.qos0 && (!ready || !b.queued.empty() || full);
  if (p.qos == mqtt::QoS::k0 && !store_qos0) {
    if (!ready) return bt.drop_bridge_down.Inc(), false;
    if (d.qos0_backpressure && buffered > bound / 2) crowded_ = Crowded{true, bridge, slot};
    if (full) return bt.drop_queue_full.Inc(), false;
    Conn& c = *north_[bridge];
    const int64_t sid = slot >= 0 && size_t(slot) < c.data_ids.size() ? c.data_ids[slot] : 0;
    if (!SendPacket(c, sid, p, v)) return bt.drop_not_encodable.Inc(), false;
  } else {
    if (!b.log && b.inflight.size() + b.queued.size() >= d.max_queue) return bt.drop_queue_full.Inc(), false;
    NorthMsg m;
    m.slot = slot;
    m.seq = b.seq++;
    m.qos0 = p.qos == mqtt::QoS::k0;
    mqtt::Publish out = p;
    if (!m.qos0) {
      out.qos = p.qos == mqtt::QoS::k2 ? mqtt::QoS::k2 : mqtt::QoS::k1;  // the rule's QoS, at most
      out.packet_id = 1;  // patched when sent
    }
    out.dup = false;
    m.packet = Encode(out, v);
    if (!m.packet) return bt.drop_not_encodable.Inc(), false;
    if (!m.qos0) m.id_offset = PacketIdOffset(m.packet, out.topic.size());
    if (b.log) {
      // Custody passes to the log: the publisher hears when the commit is durable.
      if (!StoreNorth(bridge, m, origin)) return false;
    } else if (origin) {
      m.origin = *origin;
      m.has_origin = true;
    }
    if (!ready || !b.queued.empty() || !SendNorth(bridge, m, false)) Enqueue(bridge, std::move(m));
  }
  stats_.publish_out.Inc();
  stats_.publish_bytes_out.Inc(p.payload.size());
  bridge_traffic_[bridge].tx_msgs.Inc();
  bridge_traffic_[bridge].tx_bytes.Inc(p.payload.size());
  return true;
}

bool Worker::NorthSlotFull(uint32_t bridge, int slot) const {
  return NorthBuffered(bridge, slot) > NorthQos0Bound(bridge);
}

uint64_t Worker::NorthQos0Bound(uint32_t bridge) const {
  // A TCP bridge has one stream, its PINGREQs behind everything queued: a smaller bound keeps
  // them within the PINGRESP timeout on a slow uplink.
  const bool tcp = BridgeUp(bridge) && north_[bridge]->tcp;
  return tcp ? kMaxNorthTcpQos0Bytes : kMaxNorthQos0Bytes;
}

void Worker::HoldBack(Conn& c, int64_t sid) {
  if (c.north || c.dead || c.tcp_close) return;
  if (c.tcp) {
    if (c.rx_paused || c.fd < 0) return;
    c.rx_paused = true;
    TcpWatch(c, c.tcp_out);  // no EPOLLIN: level-triggered, it would be reported every time
  } else if (c.q == nullptr || !c.q->HoldCredit(sid)) {
    return;
  }
  held_back_.push_back(HeldBack{c.ref(), sid, crowded_.bridge, crowded_.slot, now_});
  stats_.south_held_back.Inc();
}

void Worker::Unhold(Conn& c, int64_t sid) {
  if (!c.tcp) {
    if (c.q) c.q->ReleaseCredit(sid);
    return;
  }
  if (!c.rx_paused) return;
  c.rx_paused = false;
  if (c.fd < 0 || c.tcp_close) return;
  TcpWatch(c, c.tcp_out);
  QueueTlsBuffered(c);  // records GnuTLS had decrypted already: the socket will not report them
}

void Worker::ReleaseHeldBack(MonoNs now) {
  // Keepalive deadlines are whole seconds: the stamps below need not be fresher than this.
  const bool stamp = now - held_stamped_at_ >= kHeldStampEveryNs;
  if (stamp) held_stamped_at_ = now;
  // Most entries wait for the same slot: its level once per call (UINT64_MAX: gone).
  uint32_t last_bridge = UINT32_MAX;
  int last_slot = 0;
  uint64_t level = 0, bound = 1;
  for (size_t i = 0; i < held_back_.size();) {
    const HeldBack h = held_back_[i];
    Conn* c = Lookup(h.conn);
    if (c != nullptr) {
      if (h.bridge != last_bridge || h.slot != last_slot) {
        last_bridge = h.bridge;
        last_slot = h.slot;
        const bool gone = h.bridge >= bstate_.size() || bstate_[h.bridge].removed ||
                          !bstate_[h.bridge].ready || !BridgeUp(h.bridge);
        level = gone ? UINT64_MAX : NorthBuffered(h.bridge, h.slot);
        bound = gone ? 1 : NorthQos0Bound(h.bridge);
      }
      // Released once the slot has drained to a quarter; after a while below half too, so
      // traffic that is never held (another worker's, QoS 1) cannot starve it; and after
      // kMaxHoldNs regardless, so a device that died meanwhile is found out.
      const MonoNs held = now - h.since;
      const bool release = level == UINT64_MAX || level <= bound / 4 ||
                           (held >= kHoldTurnNs && level <= bound / 2) || held >= kMaxHoldNs;
      if (!release) {
        // It is sending; we do not take it: its keepalive does not run out meanwhile (a
        // client sends no PINGREQ while it has just sent something). A QUIC client's
        // control stream flows unless it publishes on it: strict keepalive still counts
        // its PINGREQs there.
        if (stamp) {
          ConnActivity& a = activity_->at(c->slot);
          ConnActivity::Stamp(a.last_rx, now);
          if (c->tcp || h.sid == 0) ConnActivity::Stamp(a.last_rx_control, now);
        }
        ++i;
        continue;
      }
      Unhold(*c, h.sid);
    }
    held_back_[i] = held_back_.back();
    held_back_.pop_back();
  }
}

uint64_t Worker::NorthBuffered(uint32_t bridge, int slot) const {
  if (!BridgeUp(bridge)) return 0;
  const Conn& c = *north_[bridge];
  if (c.tcp) return c.tx.size() - c.tx_off + (c.tls ? c.tls->pending_out() : 0);
  const int64_t sid = slot >= 0 && size_t(slot) < c.data_ids.size() ? c.data_ids[slot] : 0;
  return c.q->BufferedBytes(sid);
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
  // The pacer hands out one send quantum (about 64 KB) per Write; a bridge carrying many
  // connections' traffic takes several per iteration while ngtcp2 lets it.
  for (size_t sent = 0; sent < kMaxNorthDatagrams;) {
    const size_t n = q.Write(now, scratch_, kMaxNorthDatagrams - sent, emit);
    sent += n;
    if (n == 0 || !q.want_write()) break;
  }
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

}  // namespace qbridge::dp
