// The controlplane's commands to this worker (dial or drop a bridge, a new routing
// snapshot, a control packet to write, a south connection's activation after CONNACK, an
// orderly close) and the way up to it. Decisions are the controlplane's; this file only
// carries them out on the connection they name.

#include "dataplane/worker/worker.h"

#include <algorithm>

#include "dataplane/worker/conn.h"

namespace qbridge::dp {

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
    // Turns of groups that no longer exist are forgotten (the map stays as small as the
    // groups); the others carry on.
    if (routes_ && !share_turn_.empty()) {
      absl::erase_if(share_turn_, [&](const auto& e) {
        return std::none_of(routes_->shared.begin(), routes_->shared.end(),
                            [&](const SharedGroup& g) { return g.id == e.first; });
      });
    }
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

void Worker::ToControlplane(Msg m) {
  m.src_core = config_.core;
  outbox_cp_.push_back(m);
}

void Worker::QueueOffline(uint64_t session, const mqtt::Publish& p) {
  // Control packets to the controlplane are never dropped; messages for offline sessions
  // are, when the controlplane falls behind, so they cannot grow this core's backlog.
  if (outbox_cp_.size() >= kMaxOfflineBacklog) return stats_.drop_offline_busy.Inc();
  mqtt::Publish numbered = p;
  numbered.packet_id = 1;  // the delivering core numbers it
  offline_buf_.clear();
  if (!mqtt::EncodeTo(numbered, mqtt::Version::k5, offline_buf_)) return stats_.drop_route_failed.Inc();
  Msg m = MakeMsg(MsgType::kOffline, ConnRef{}, 0, offline_buf_);
  m.arg = session;
  ToControlplane(m);
  stats_.routed_offline.Inc();
}

}  // namespace qbridge::dp
