// The controlplane core's loop and its plumbing: PollOnce (drain the workers' rings, fire
// due timers, publish routes, flush), message and timer dispatch to the south-session and
// bridge halves, orderly shutdown, the report REST copies out, and the output side (packets
// and messages to workers, flushed once per iteration). Decisions about a session live in
// south_sessions.cc, about a bridge in bridges.cc, about routes in routing.cc.

#include "controlplane/controlplane.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "controlplane/cp_internal.h"

namespace qbridge::cp {
Controlplane::Controlplane(ControlplaneConfig config, dp::RingMesh* rings,
                           std::vector<dp::ActivityTable*> activity)
    : config_(std::move(config)),
      rings_(rings),
      activity_(std::move(activity)),
      wheel_(config_.tick_ns, 0),
      rng_(config_.seed ? config_.seed : dp::SystemClock().Now()) {
  outbox_.resize(rings_->workers());
  acked_version_.assign(rings_->workers(), 0);
  for (const BridgeConfig& c : config_.bridges) bridges_.push_back(MakeBridge(c));
}

Controlplane::~Controlplane() {
  for (auto& box : outbox_)
    for (Msg& m : box) dp::ReleaseMsg(m);
}

void Controlplane::Start(MonoNs now) {
  wheel_.Advance(now, [](TimerId, uint64_t) {});  // the wheel starts at the first time we see
  PublishRoutes();
  for (Bridge& b : bridges_)
    if (b.cfg.enabled) Dial(b, now);
  Flush();
}

bool Controlplane::PollOnce(MonoNs now) {
  bool any = false;
  Msg batch[32];
  for (size_t w = 0; w < rings_->workers(); ++w) {
    dp::MsgRing& r = rings_->ring(w, rings_->cp());
    size_t taken = 0;
    while (taken < kMaxMsgsPerRing) {
      const size_t n = r.DequeueBurst(batch);
      if (n == 0) break;
      any = true;
      taken += n;
      for (size_t i = 0; i < n; ++i) {
        OnMsg(batch[i], now);
        dp::ReleaseMsg(batch[i]);
      }
    }
  }
  if (wheel_.Advance(now, [&](TimerId, uint64_t cookie) { OnTimer(cookie, now); }) > 0) any = true;
  if (routes_dirty_) PublishRoutes();
  Flush();
  return any;
}

void Controlplane::OnMsg(Msg& m, MonoNs now) {
  switch (m.type) {
    case MsgType::kControlPacket:
      if (Bridge* b = BridgeOf(m.conn)) return OnBridgePacket(*b, m, now);
      return OnSouthPacket(m, now);
    case MsgType::kBridgeUp:
      if (m.aux < bridges_.size()) OnBridgeUp(bridges_[m.aux], m, now);
      return;
    case MsgType::kSnapshotAck:
      return OnSnapshotAck(m.src_core, m.arg);
    case MsgType::kRetain:
      return OnRetain(m);
    case MsgType::kOffline:
      return OnOffline(m);
    case MsgType::kConnClosed: {
      if (m.aux != 0) {  // a bridge connection: only the current dial's end counts
        const size_t i = m.aux - 1;
        if (i < bridges_.size() && uint64_t(m.stream) == bridges_[i].dial) {
          const auto why = m.bytes();
          if (!why.empty() && bridges_[i].close_why.empty())
            bridges_[i].close_why.assign(reinterpret_cast<const char*>(why.data()), why.size());
          OnBridgeClosed(bridges_[i], m.arg, now);
        }
        return;
      }
      auto it = sessions_.find(m.conn);
      if (it == sessions_.end()) return;
      ++south_.closes;
      if (it->second.resumed_from) resumed_.erase(*it->second.resumed_from);
      wheel_.Cancel(it->second.timer);
      // A takeover already handed the session to the new connection.
      if (!it->second.taken_over) {
        SouthSession& s = it->second;
        // Still set: the connection did not end with DISCONNECT. With a Will Delay Interval
        // it waits (at most as long as the session lives) for the client to come back.
        const uint32_t delay = std::min(s.will_delay_s, s.expiry_s);
        if (!s.will.empty() && delay > 0 && !s.client_id.empty()) {
          DelayedWill& d = delayed_wills_[s.client_id];
          if (d.id) {
            wheel_.Cancel(d.timer);
            delayed_will_by_id_.erase(d.id);
          }
          d.will = std::move(s.will);
          d.retain = s.will_retain;
          d.conn = s.conn;
          d.id = next_stored_id_++ + 1;
          d.timer = wheel_.Schedule(now + uint64_t(delay) * dp::kSecNs, kWillCookie | d.id);
          delayed_will_by_id_[d.id] = s.client_id;
          s.will.clear();
          ++south_.wills_delayed;
        }
        PublishWill(s);
        if (!s.stored) StoreSession(s, now);
      }
      auto id = by_client_id_.find(it->second.client_id);
      if (id != by_client_id_.end() && id->second == m.conn) by_client_id_.erase(id);
      if (!it->second.subs.empty()) routes_dirty_ = true;
      sessions_.erase(it);
      return;
    }
    case MsgType::kStreamClosed: {
      auto it = sessions_.find(m.conn);
      if (it == sessions_.end()) return;
      auto& ds = it->second.data_streams;
      ds.erase(std::remove(ds.begin(), ds.end(), m.stream), ds.end());
      auto& subs = it->second.subs;
      const size_t before = subs.size();
      subs.erase(std::remove_if(subs.begin(), subs.end(),
                                [&](const Sub& s) { return s.stream == m.stream; }),
                 subs.end());
      if (subs.size() != before) routes_dirty_ = true;
      return;
    }
    default:
      return;
  }
}

void Controlplane::OnTimer(uint64_t cookie, MonoNs now) {
  if (cookie & kBridgeCookie) {
    const size_t i = cookie & ~kBridgeCookie;
    if (i < bridges_.size()) {
      bridges_[i].timer = TimerId{};
      OnBridgeTimer(bridges_[i], now);
    }
    return;
  }
  if (cookie & kWillCookie) {  // a will's delay ran out
    auto id = delayed_will_by_id_.find(cookie & ~kWillCookie);
    if (id == delayed_will_by_id_.end()) return;
    const std::string client_id = id->second;
    delayed_will_by_id_.erase(id);
    FireDelayedWill(client_id);
    return;
  }
  if (cookie & kStoredCookie) {  // an offline session expired
    auto id = stored_by_id_.find(cookie & ~kStoredCookie);
    if (id == stored_by_id_.end()) return;
    if (auto st = stored_.find(id->second); st != stored_.end()) {
      south_.offline_dropped += st->second.queue.size();
      if (!st->second.subs.empty()) routes_dirty_ = true;
      stored_.erase(st);
    }
    stored_by_id_.erase(id);
    ++south_.sessions_expired;
    return;
  }
  auto it = sessions_.find(RefOf(cookie));
  if (it == sessions_.end()) return;
  it->second.timer = TimerId{};
  OnSouthKeepalive(it->second, now);
}

void Controlplane::Shutdown(MonoNs now) {
  shutting_down_ = true;
  // Sessions end with the process: wills still waiting out their delay go now.
  std::vector<std::string> waiting;
  for (auto& [id, d] : delayed_wills_) {
    wheel_.Cancel(d.timer);
    delayed_will_by_id_.erase(d.id);
    waiting.push_back(id);
  }
  for (const std::string& id : waiting) FireDelayedWill(id);
  for (Bridge& b : bridges_) {
    wheel_.Cancel(b.timer);
    if (b.conn.valid() && b.status.state == BridgeState::kUp) {
      Send(b.conn, 0, mqtt::Disconnect{}, b.cfg.version);
    }
    Msg m = dp::MakeMsg(MsgType::kClose, b.conn);
    if (!b.conn.valid()) m.aux = uint32_t(&b - bridges_.data() + 1);  // a dial in progress
    Post(b.cfg.worker, m);
    b.status.state = BridgeState::kIdle;
  }
  for (auto& [ref, s] : sessions_) {
    if (s.closing) continue;
    s.taken_over = false;
    EndSouth(s, ReasonCode::kServerShuttingDown, kAppNoError, now);
  }
  (void)now;
  Flush();
}

bool Controlplane::ShutdownDone() const {
  if (!shutting_down_) return false;
  for (const Bridge& b : bridges_)
    if (b.conn.valid()) return false;
  for (const auto& box : outbox_)
    if (!box.empty()) return false;
  return sessions_.empty();
}

Controlplane::Report Controlplane::MakeReport(MonoNs now, size_t max_clients) const {
  Report r;
  r.at = now;
  for (size_t i = 0; i < bridges_.size(); ++i) {
    const Bridge& b = bridges_[i];
    r.bridges.push_back(BridgeReport{b.cfg.name, BridgeStateName(b.status.state), b.cfg.enabled,
                                     b.cfg.keepalive_s, b.pingresp_timeout_ns, b.cfg.worker,
                                     ControlIdleNs(i, now), b.status, b.cfg.forwards,
                                     b.cfg.subscriptions, b.removed});
  }
  for (const auto& [ref, s] : sessions_) {
    if (s.closing) continue;
    ++r.sessions;
    if (r.clients.size() >= max_clients) continue;
    r.clients.push_back(ClientReport{s.client_id, ref, s.keepalive_s, uint8_t(s.version),
                                     s.subs.size(), s.pingreqs, s.tcp, 1 + s.data_streams.size(),
                                     s.connected_at});
  }
  r.south = south_;
  r.offline_sessions = stored_.size();
  return r;
}

// --- output ------------------------------------------------------------------------------------

void Controlplane::Send(ConnRef to, int64_t stream, const mqtt::Packet& p, mqtt::Version v) {
  buf_.clear();
  if (!mqtt::EncodeTo(p, v, buf_)) return;
  Post(to.core, dp::MakeMsg(MsgType::kWrite, to, stream, buf_));
}

void Controlplane::Post(uint16_t core, Msg m) {
  if (core >= outbox_.size()) {
    dp::ReleaseMsg(m);
    return;
  }
  m.src_core = uint16_t(rings_->cp());
  outbox_[core].push_back(m);
}

void Controlplane::Flush() {
  for (size_t w = 0; w < outbox_.size(); ++w) {
    auto& box = outbox_[w];
    if (box.empty()) continue;
    const size_t n = rings_->ring(rings_->cp(), w).EnqueueBurst(box);
    // Control messages are never dropped: what the ring cannot take waits for the next
    // iteration, in order.
    box.erase(box.begin(), box.begin() + long(n));
  }
}

}  // namespace qbridge::cp
