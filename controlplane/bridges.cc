// North bridges' control side: dialling (server, then hybrid_servers), CONNECT and CONNACK,
// resubscribing, the PINGREQ timer that only control-stream writes refresh, the PINGRESP
// deadline that declares a link dead, backoff with jitter, and run-time changes (enable,
// new rules, added and removed bridges). The message custody for a bridge is its worker's
// (dataplane/worker/bridge.cc).

#include "controlplane/controlplane.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "controlplane/cp_internal.h"
#include "mqtt/rewrite.h"
#include "mqtt/topic.h"

namespace qbridge::cp {
absl::Status ValidateBridgeTimers(std::string_view bridge, uint64_t keepalive_ns,
                                  uint64_t quic_keepalive_ns, uint64_t quic_idle_timeout_ns) {
  const std::string where = absl::StrCat("bridges.mqtt.", std::string(bridge));
  if (quic_idle_timeout_ns == 0) return absl::OkStatus();  // idle timeout off: nothing to race
  if (quic_keepalive_ns != 0 && quic_keepalive_ns >= quic_idle_timeout_ns) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ".quic_keepalive (", quic_keepalive_ns / dp::kMsNs, " ms) must be below ", where,
        ".quic_idle_timeout (", quic_idle_timeout_ns / dp::kMsNs,
        " ms): QUIC PINGs that come no sooner than the idle timeout let an idle connection "
        "die; set quic_keepalive to at most half of quic_idle_timeout"));
  }
  if (keepalive_ns != 0 && keepalive_ns * 3 / 2 >= quic_idle_timeout_ns) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ".keepalive x 1.5 (", keepalive_ns * 3 / 2 / dp::kMsNs, " ms) must be below ",
        where, ".quic_idle_timeout (", quic_idle_timeout_ns / dp::kMsNs,
        " ms): the QUIC connection would time out before the broker's MQTT keepalive "
        "deadline; raise quic_idle_timeout above 1.5 x keepalive or lower keepalive"));
  }
  return absl::OkStatus();
}

const char* BridgeStateName(BridgeState s) {
  switch (s) {
    case BridgeState::kIdle: return "idle";
    case BridgeState::kDialing: return "dialing";
    case BridgeState::kConnecting: return "connecting";
    case BridgeState::kUp: return "connected";
    case BridgeState::kClosing: return "closing";
    case BridgeState::kBackoff: return "backoff";
  }
  return "?";
}

Controlplane::Bridge Controlplane::MakeBridge(const BridgeConfig& c) {
  Bridge b;
  b.cfg = c;
  b.pingresp_timeout_ns =
      c.pingresp_timeout_ns ? c.pingresp_timeout_ns
                            : std::min<uint64_t>(uint64_t(c.keepalive_s) * dp::kSecNs / 2, 30 * dp::kSecNs);
  return b;
}

void Controlplane::AddBridge(const BridgeConfig& config, const std::vector<uint64_t>& dials, MonoNs now) {
  const uint32_t index = uint32_t(bridges_.size());
  // Every worker knows every bridge (routes name it by index on any core); the ring to a
  // worker is ordered, so the dial below never overtakes its kAddBridge.
  for (size_t w = 0; w < dials.size(); ++w) {
    Msg m = dp::MakeMsg(MsgType::kAddBridge, ConnRef{});
    m.aux = index;
    m.arg = dials[w];
    Post(uint16_t(w), m);
  }
  bridges_.push_back(MakeBridge(config));
  Bridge& b = bridges_.back();
  b.pending_forwards = std::move(b.cfg.forwards);
  b.cfg.forwards.clear();
  PublishRoutes();  // behind every kAddBridge in each worker's ring
  b.routes_after_version = routes_version_;
  if (b.cfg.enabled) Dial(b, now);
  Flush();
}

bool Controlplane::RemoveBridge(std::string_view name, MonoNs now) {
  for (Bridge& b : bridges_) {
    if (b.removed || b.cfg.name != name) continue;
    UpdateBridgeRules(name, {}, {}, now);  // unsubscribes upstream while it is still up
    SetBridgeEnabled(name, false, now);
    b.removed = true;
    b.routes_after_version = 0;
    // Its worker refuses what it holds for it (the publishers hear of it) and takes no more.
    Msg m = dp::MakeMsg(MsgType::kRemoveBridge, ConnRef{});
    m.aux = uint32_t(&b - bridges_.data());
    Post(b.cfg.worker, m);
    Flush();
    return true;
  }
  return false;
}

// --- north -------------------------------------------------------------------------------------

Controlplane::Bridge* Controlplane::BridgeOf(ConnRef r) {
  for (Bridge& b : bridges_)
    if (b.conn.valid() && b.conn == r) return &b;
  return nullptr;
}

void Controlplane::Dial(Bridge& b, MonoNs now) {
  const size_t i = size_t(&b - bridges_.data());
  b.status.state = BridgeState::kDialing;
  ++b.status.dials;
  b.conn = ConnRef{};
  b.close_why.clear();
  b.ping_sent_at = 0;
  Msg m = dp::MakeMsg(MsgType::kBridgeConnect, ConnRef{});
  m.aux = uint32_t(i);
  m.arg = ++b.dial;
  m.stream = int64_t(b.status.server);
  b.reached_up = false;
  Post(b.cfg.worker, m);
  wheel_.Cancel(b.timer);
  b.timer = wheel_.Schedule(now + b.cfg.connect_timeout_ns, kBridgeCookie | i);
}

void Controlplane::OnBridgeUp(Bridge& b, const Msg& m, MonoNs now) {
  if (m.arg != b.dial ||
      (b.status.state != BridgeState::kDialing && b.status.state != BridgeState::kConnecting)) {
    // A connection nobody waits for (an older dial, or the bridge was switched off): close it.
    Post(b.cfg.worker, dp::MakeMsg(MsgType::kClose, m.conn));
    return;
  }
  b.conn = m.conn;
  mqtt::Connect c;
  c.version = b.cfg.version;
  c.bridge = b.cfg.bridge_bit && b.cfg.version != mqtt::Version::k5;
  c.clean_start = b.cfg.clean_start;
  c.keep_alive = b.cfg.keepalive_s;
  c.client_id = b.cfg.client_id;
  if (b.cfg.username) c.username = *b.cfg.username;
  if (b.cfg.password) {
    c.password = mqtt::Bytes(reinterpret_cast<const uint8_t*>(b.cfg.password->data()),
                             b.cfg.password->size());
  }
  Send(b.conn, 0, c, b.cfg.version);
  b.ping_requested_at = now;
  b.status.state = BridgeState::kConnecting;
}

void Controlplane::OnBridgePacket(Bridge& b, const Msg& m, MonoNs now) {
  uint8_t header;
  mqtt::Bytes body;
  if (!Unframe(m.bytes(), &header, &body)) return;
  mqtt::Packet p;
  if (!mqtt::Decode(header, body, b.cfg.version, &p).ok()) {
    return CloseBridge(b, kAppCtrlStreamDown, now, "malformed packet from the upstream");
  }
  switch (static_cast<PacketType>(header >> 4)) {
    case PacketType::kConnack: {
      if (b.status.state != BridgeState::kConnecting) return;
      const auto& ack = std::get<mqtt::Connack>(p);
      if (ack.reason != ReasonCode::kSuccess) {
        ++b.status.connack_refused;
        return CloseBridge(b, kAppNoError, now,
                           absl::StrFormat("CONNACK refused (0x%02X)", uint8_t(ack.reason)));
      }
      b.status.state = BridgeState::kUp;
      b.reached_up = true;
      if (b.status.connects++ > 0) ++b.status.reconnects;
      b.status.up_since = now;
      NoteBridgeEvent(b, now, b.status.server == 0 ? std::string("connected")
                                                   : absl::StrCat("connected (hybrid server ", b.status.server, ")"));
      {
        // The worker may now replay what the last connection left unacknowledged and send
        // what waited for the upstream.
        Msg ready = dp::MakeMsg(MsgType::kBridgeReady, b.conn);
        ready.aux = uint32_t(&b - bridges_.data());
        // The upstream's Receive Maximum (EMQX: max_inflight, 32 by default): the worker keeps
        // no more QoS 1 PUBLISHes unacknowledged, or the broker disconnects with 0x93.
        ready.arg = ack.properties.receive_maximum.value_or(65535);
        Post(b.cfg.worker, ready);
      }
      b.attempt = 0;
      b.ping_sent_at = 0;
      b.last_pingreq_at = 0;
      if (ack.properties.server_keep_alive) b.cfg.keepalive_s = *ack.properties.server_keep_alive;
      // Subscriptions on data streams died with the last connection (EMQX keeps only the
      // control stream's): make every one again, whatever session-present says.
      for (const BridgeSubscription& s : b.cfg.subscriptions) {
        mqtt::Subscribe sub;
        // Ids from the range the worker never uses for PUBLISH.
        sub.packet_id = b.next_packet_id;
        b.next_packet_id = b.next_packet_id == 65535 ? dp::kControlPacketIdFirst : uint16_t(b.next_packet_id + 1);
        sub.subscriptions.push_back(mqtt::Subscription{s.topic, s.qos});
        const int64_t stream = s.slot < 0 ? 0 : dp::BridgeDataSlot(s.slot);
        Send(b.conn, stream, sub, b.cfg.version);
        if (stream == 0) b.ping_requested_at = now;
      }
      return ArmBridgeKeepalive(b, now);
    }
    case PacketType::kPingresp:
      if (b.ping_sent_at) {
        const uint64_t rtt = now - b.ping_sent_at;
        b.status.rtt_last_ns = rtt;
        b.status.rtt_max_ns = std::max(b.status.rtt_max_ns, rtt);
        size_t bucket = 0;
        for (uint64_t lim = dp::kMsNs; bucket < 5 && rtt >= lim; lim *= 10) ++bucket;
        ++b.status.rtt_hist[bucket];
        ++b.status.pingresps;
        b.ping_sent_at = 0;
      }
      return;
    case PacketType::kSuback:
      ++b.status.subacks;
      for (ReasonCode r : std::get<mqtt::Suback>(p).reasons)
        if (uint8_t(r) >= 0x80) ++b.status.suback_failures;
      return;
    case PacketType::kDisconnect: {
      const auto r = std::get<mqtt::Disconnect>(p).reason;
      b.last_disconnect_reason = uint8_t(r);
      ++b.status.disconnects_by_reason[uint8_t(r)];
      return;  // the broker closes the connection next
    }
    default:
      return;
  }
}

MonoNs Controlplane::NextPingDue(const Bridge& b) const {
  const MonoNs last_tx =
      std::max(dp::ConnActivity::Read(Activity(b.conn).last_tx_control), b.ping_requested_at);
  // A little ahead of the keepalive (1/20 of it, at most 500 ms), so scheduling slack never
  // makes the gap between two control-stream packets exceed the keepalive itself.
  const uint64_t ka = uint64_t(b.cfg.keepalive_s) * dp::kSecNs;
  return last_tx + ka - std::min<uint64_t>(ka / 20, 500 * dp::kMsNs);
}

void Controlplane::ArmBridgeKeepalive(Bridge& b, MonoNs now) {
  const size_t i = size_t(&b - bridges_.data());
  wheel_.Cancel(b.timer);
  if (b.cfg.keepalive_s == 0) return;
  MonoNs at = NextPingDue(b);
  if (b.ping_sent_at) at = std::min(at, b.ping_sent_at + b.pingresp_timeout_ns);
  b.timer = wheel_.Schedule(std::max(at, now), kBridgeCookie | i);
}

void Controlplane::OnBridgeTimer(Bridge& b, MonoNs now) {
  switch (b.status.state) {
    case BridgeState::kDialing:
    case BridgeState::kConnecting:  // no QUIC or no CONNACK in time
      return CloseBridge(b, kAppNoError, now,
                         b.status.state == BridgeState::kDialing ? "no connection within connect_timeout"
                                                                  : "no CONNACK within connect_timeout");
    case BridgeState::kBackoff:
      return Dial(b, now);
    case BridgeState::kClosing: {
      // The worker never reported the close: dial anyway.
      return Dial(b, now);
    }
    case BridgeState::kUp: {
      if (b.ping_sent_at && now >= b.ping_sent_at + b.pingresp_timeout_ns) {
        ++b.status.pingresp_timeouts;  // the link is dead, whatever QUIC thinks
        return CloseBridge(b, kAppNoError, now, "no PINGRESP in time");
      }
      if (!b.ping_sent_at && now >= NextPingDue(b)) {
        const MonoNs last_tx =
            std::max(dp::ConnActivity::Read(Activity(b.conn).last_tx_control), b.ping_requested_at);
        if (now > last_tx) {
          b.status.max_control_silence_ns = std::max(b.status.max_control_silence_ns, now - last_tx);
        }
        Send(b.conn, 0, mqtt::Pingreq{}, b.cfg.version);
        ++b.status.pingreqs_sent;
        if (b.last_pingreq_at) {
          b.status.max_pingreq_gap_ns = std::max(b.status.max_pingreq_gap_ns, now - b.last_pingreq_at);
        }
        b.last_pingreq_at = now;
        b.ping_sent_at = now;
        b.ping_requested_at = now;
      }
      return ArmBridgeKeepalive(b, now);
    }
    case BridgeState::kIdle:
      return;
  }
}

void Controlplane::NoteBridgeEvent(Bridge& b, MonoNs now, std::string what) {
  auto& ev = b.status.events;
  if (ev.size() == BridgeStatus::kMaxEvents) ev.pop_front();
  ev.push_back(BridgeStatus::Event{now, std::move(what)});
}

void Controlplane::CloseBridge(Bridge& b, uint64_t app_error, MonoNs now, std::string_view why) {
  const size_t i = size_t(&b - bridges_.data());
  if (b.close_why.empty()) b.close_why = why;
  Msg m = dp::MakeMsg(MsgType::kClose, b.conn);  // invalid conn: whatever the dial opened
  m.arg = app_error;
  if (!b.conn.valid()) m.aux = uint32_t(i + 1);
  Post(b.cfg.worker, m);
  b.status.state = BridgeState::kClosing;
  wheel_.Cancel(b.timer);
  // If the worker's report never comes, dial again after the longest backoff.
  b.timer = wheel_.Schedule(now + b.cfg.backoff_max_ns + b.cfg.connect_timeout_ns,
                            kBridgeCookie | i);
}

void Controlplane::OnBridgeClosed(Bridge& b, uint64_t app_error, MonoNs now) {
  const size_t i = size_t(&b - bridges_.data());
  ++b.status.closes_by_app_error[app_error];
  {
    std::string what = b.close_why;
    if (what.empty() && b.last_disconnect_reason != 0) {
      what = absl::StrFormat("DISCONNECT 0x%02X from the upstream", b.last_disconnect_reason);
    }
    if (what.empty()) {
      what = b.reached_up ? absl::StrCat("connection closed (application error ", app_error, ")")
                          : absl::StrCat("could not connect (application error ", app_error, ")");
    }
    NoteBridgeEvent(b, now, absl::StrCat(b.status.up_since ? "down: " : "dial failed: ", what));
  }
  b.close_why.clear();
  b.status.up_since = 0;
  if (shutting_down_ || !b.cfg.enabled) {
    b.conn = ConnRef{};
    b.status.state = BridgeState::kIdle;
    wheel_.Cancel(b.timer);
    return;
  }
  if (app_error == kAppCtrlStreamDown && b.last_disconnect_reason == uint8_t(ReasonCode::kKeepAliveTimeout)) {
    ++b.status.keepalive_kicks;  // the NanoMQ incident's fingerprint (mqtt-over-quic.md 3.4)
  }
  b.last_disconnect_reason = 0;
  b.conn = ConnRef{};
  b.ping_sent_at = 0;
  b.status.state = BridgeState::kBackoff;
  // Hybrid bridging: an upstream we could not reach (or that refused us) gives way to the
  // next; one that was up is tried again first.
  if (!b.reached_up && b.cfg.servers > 1) b.status.server = (b.status.server + 1) % b.cfg.servers;
  // Exponential backoff with jitter in [delay/2, delay]; longer after "overloaded" (2).
  const uint32_t shift = std::min<uint32_t>(b.attempt++, 20);
  uint64_t delay = std::min(b.cfg.backoff_max_ns, b.cfg.backoff_base_ns << shift);
  if (app_error == 2) delay = b.cfg.backoff_max_ns;
  delay = delay / 2 + (delay > 1 ? rng_() % (delay / 2 + 1) : 0);
  b.status.last_backoff_ns = delay;
  wheel_.Cancel(b.timer);
  b.timer = wheel_.Schedule(now + delay, kBridgeCookie | i);
}

bool Controlplane::SetBridgeEnabled(std::string_view name, bool enabled, MonoNs now) {
  for (Bridge& b : bridges_) {
    if (b.removed || b.cfg.name != name) continue;
    if (b.cfg.enabled == enabled) return true;
    b.cfg.enabled = enabled;
    NoteBridgeEvent(b, now, enabled ? "enabled" : "disabled");
    if (enabled) {
      b.attempt = 0;
      Dial(b, now);
    } else {
      if (b.conn.valid() && b.status.state == BridgeState::kUp) {
        Send(b.conn, 0, mqtt::Disconnect{}, b.cfg.version);
      }
      CloseBridge(b, kAppNoError, now, "disabled");
      wheel_.Cancel(b.timer);
      b.status.state = BridgeState::kIdle;
    }
    Flush();
    return true;
  }
  return false;
}

bool Controlplane::UpdateBridgeRules(std::string_view name, const std::vector<BridgeForward>& forwards,
                                     const std::vector<BridgeSubscription>& subscriptions, MonoNs now) {
  for (Bridge& b : bridges_) {
    if (b.removed || b.cfg.name != name) continue;
    (b.routes_after_version ? b.pending_forwards : b.cfg.forwards) = forwards;
    routes_dirty_ = true;
    auto same = [](const BridgeSubscription& x, const BridgeSubscription& y) {
      return x.topic == y.topic && x.slot == y.slot && x.qos == y.qos && x.local_topic == y.local_topic &&
             x.prefix == y.prefix && x.suffix == y.suffix;
    };
    const bool up = b.status.state == BridgeState::kUp && b.conn.valid();
    auto next_id = [&] {
      const uint16_t id = b.next_packet_id;
      b.next_packet_id = id == 65535 ? dp::kControlPacketIdFirst : uint16_t(id + 1);
      return id;
    };
    for (const BridgeSubscription& old : b.cfg.subscriptions) {
      if (std::any_of(subscriptions.begin(), subscriptions.end(), [&](const auto& n) { return same(old, n); }))
        continue;
      if (up) {
        mqtt::Unsubscribe un;
        un.packet_id = next_id();
        un.filters.push_back(old.topic);
        Send(b.conn, old.slot < 0 ? 0 : dp::BridgeDataSlot(old.slot), un, b.cfg.version);
        if (old.slot < 0) b.ping_requested_at = now;
      }
    }
    for (const BridgeSubscription& n : subscriptions) {
      if (std::any_of(b.cfg.subscriptions.begin(), b.cfg.subscriptions.end(),
                      [&](const auto& old) { return same(old, n); }))
        continue;
      if (up) {
        mqtt::Subscribe sub;
        sub.packet_id = next_id();
        sub.subscriptions.push_back(mqtt::Subscription{n.topic, n.qos});
        Send(b.conn, n.slot < 0 ? 0 : dp::BridgeDataSlot(n.slot), sub, b.cfg.version);
        if (n.slot < 0) b.ping_requested_at = now;
      }
    }
    b.cfg.subscriptions = subscriptions;
    Flush();
    return true;
  }
  return false;
}

uint64_t Controlplane::ControlIdleNs(size_t i, MonoNs now) const {
  const Bridge& b = bridges_[i];
  if (!b.conn.valid()) return 0;
  const MonoNs last = dp::ConnActivity::Read(Activity(b.conn).last_control_wire);
  return now > last ? now - last : 0;
}

}  // namespace qbridge::cp
