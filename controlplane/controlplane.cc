#include "controlplane/controlplane.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "mqtt/framer.h"
#include "mqtt/rewrite.h"
#include "mqtt/topic.h"

namespace qbridge::cp {
namespace {

using dp::Msg;
using dp::MsgType;
using mqtt::PacketType;
using mqtt::ReasonCode;

constexpr uint64_t kAppNoError = 0;
constexpr uint64_t kAppCtrlStreamDown = 1;
constexpr size_t kMaxMsgsPerRing = 512;  // per worker ring per iteration

// Splits one whole packet (as a worker forwards it) into header and body.
bool Unframe(std::span<const uint8_t> whole, uint8_t* header, mqtt::Bytes* body) {
  mqtt::Framer f(mqtt::kMaxPacketSize);
  bool got = false;
  const auto s = f.Feed(whole, [&](const mqtt::Frame& fr) {
    *header = fr.header;
    *body = fr.body;  // points into `whole`: the packet lies whole in the fragment
    got = true;
    return false;
  });
  return s.ok() && got;
}

std::string_view AsStd(std::string_view s) { return s; }

}  // namespace

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

void Controlplane::PublishRoutes() {
  auto snap = std::make_unique<dp::RouteSnapshot>();
  snap->version = ++routes_version_;
  for (size_t i = 0; i < bridges_.size(); ++i) {
    const BridgeConfig& c = bridges_[i].cfg;
    for (const BridgeForward& f : c.forwards) {
      auto rw = mqtt::TopicRewrite::Create(f.local_topic, f.remote_topic, f.prefix, f.suffix);
      if (!rw.ok()) continue;  // config validation names the rule; never routed
      const uint32_t rule = uint32_t(snap->forwards.size());
      snap->forwards.push_back(
          dp::ForwardRoute{uint32_t(i), c.worker, f.slot, f.qos, f.retain, std::move(*rw)});
      dp::RouteKey key;
      key.kind = dp::RouteKey::kForward;
      key.rule = rule;
      snap->trie.Insert(f.local_topic, key, dp::RouteValue{f.qos, false});
    }
    for (const BridgeSubscription& s : c.subscriptions) {
      auto rw = mqtt::TopicRewrite::Create(s.topic, s.local_topic, s.prefix, s.suffix);
      if (!rw.ok()) continue;
      snap->inbound.push_back(dp::InboundRoute{uint32_t(i), s.topic, std::move(*rw)});
    }
  }
  for (const auto& [ref, sess] : sessions_) {
    if (sess.closing) continue;
    for (const Sub& sub : sess.subs) {
      dp::RouteKey key;
      key.kind = dp::RouteKey::kSouth;
      key.conn = ref;
      key.stream = sub.stream;
      snap->trie.Insert(sub.filter, key, dp::RouteValue{sub.qos, sub.no_local});
    }
  }
  ++south_.snapshots_built;
  for (size_t w = 0; w < rings_->workers(); ++w) {
    Msg m = dp::MakeMsg(MsgType::kSnapshot, ConnRef{});
    m.arg = reinterpret_cast<uint64_t>(snap.get());
    Post(uint16_t(w), m);
  }
  snapshots_.push_back(std::move(snap));
  routes_dirty_ = false;
}

void Controlplane::OnSnapshotAck(uint16_t core, uint64_t version) {
  if (core >= acked_version_.size()) return;
  acked_version_[core] = std::max(acked_version_[core], version);
  const uint64_t oldest_in_use = *std::min_element(acked_version_.begin(), acked_version_.end());
  // Every worker uses `oldest_in_use` or newer: older snapshots are unreachable.
  while (snapshots_.size() > 1 && snapshots_.front()->version < oldest_in_use) {
    snapshots_.erase(snapshots_.begin());
    ++south_.snapshots_freed;
  }
  for (Bridge& b : bridges_) {
    if (b.routes_after_version == 0 || oldest_in_use < b.routes_after_version) continue;
    b.routes_after_version = 0;  // every worker knows it now: its forwards may be routed
    b.cfg.forwards = std::move(b.pending_forwards);
    b.pending_forwards.clear();
    routes_dirty_ = true;
  }
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
    case MsgType::kConnClosed: {
      if (m.aux != 0) {  // a bridge connection: only the current dial's end counts
        const size_t i = m.aux - 1;
        if (i < bridges_.size() && uint64_t(m.stream) == bridges_[i].dial) {
          OnBridgeClosed(bridges_[i], m.arg, now);
        }
        return;
      }
      auto it = sessions_.find(m.conn);
      if (it == sessions_.end()) return;
      ++south_.closes;
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
        StoreSession(s, now);
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
    stored_.erase(id->second);
    stored_by_id_.erase(id);
    ++south_.sessions_expired;
    return;
  }
  auto it = sessions_.find(RefOf(cookie));
  if (it == sessions_.end()) return;
  it->second.timer = TimerId{};
  OnSouthKeepalive(it->second, now);
}

void Controlplane::StoreSession(const SouthSession& s, MonoNs now) {
  if (s.expiry_s == 0 || s.client_id.empty()) return;
  StoredSession st;
  for (const Sub& sub : s.subs)
    if (sub.stream == 0) st.subs.push_back(sub);
  st.id = next_stored_id_++;
  st.timer = wheel_.Schedule(now + uint64_t(s.expiry_s) * dp::kSecNs, kStoredCookie | st.id);
  if (auto old = stored_.find(s.client_id); old != stored_.end()) {
    wheel_.Cancel(old->second.timer);
    stored_by_id_.erase(old->second.id);
  }
  stored_by_id_[st.id] = s.client_id;
  stored_[s.client_id] = std::move(st);
}

// --- south -------------------------------------------------------------------------------------

void Controlplane::OnSouthPacket(const Msg& m, MonoNs now) {
  uint8_t header;
  mqtt::Bytes body;
  if (!Unframe(m.bytes(), &header, &body)) return;
  const auto type = static_cast<PacketType>(header >> 4);
  if (type == PacketType::kConnect) {
    mqtt::Packet p;
    const mqtt::CodecStatus st = mqtt::Decode(header, body, mqtt::Version::k5, &p);
    if (!st.ok()) {
      ++south_.malformed;
      const auto v = mqtt::PeekConnectVersion(body);
      if (st.code == ReasonCode::kUnsupportedProtocolVersion || !v) {
        // Answer in a form any client parses (3.1.1's return code 1), then close.
        mqtt::Connack ack;
        ack.reason = ReasonCode::kUnsupportedProtocolVersion;
        Send(m.conn, 0, ack, mqtt::Version::k311);
      }
      Msg close = dp::MakeMsg(MsgType::kClose, m.conn);
      close.arg = kAppCtrlStreamDown;
      Post(m.conn.core, close);
      ++south_.connack_refused;
      return;
    }
    return OnConnect(m, std::get<mqtt::Connect>(p), now);
  }
  auto it = sessions_.find(m.conn);
  if (it == sessions_.end()) return;  // CONNECT refused or connection going
  SouthSession& s = it->second;
  if (m.stream == 0) {
    if (s.last_control_rx) s.max_control_gap_ns = std::max(s.max_control_gap_ns, now - s.last_control_rx);
    s.last_control_rx = now;
  }
  mqtt::Packet p;
  if (!mqtt::Decode(header, body, s.version, &p).ok()) {
    ++south_.malformed;
    return EndSouth(s, ReasonCode::kMalformedPacket, kAppCtrlStreamDown);
  }
  switch (type) {
    case PacketType::kPingreq:
      ++south_.pingreqs;
      ++s.pingreqs;
      // PINGRESP only on the control stream: EMQX drops one asked for on a data stream.
      if (m.stream == 0) Send(s.conn, 0, mqtt::Pingresp{}, s.version);
      return;
    case PacketType::kSubscribe: {
      ++south_.subscribes;
      const auto& sub = std::get<mqtt::Subscribe>(p);
      mqtt::Suback ack;
      ack.packet_id = sub.packet_id;
      for (const mqtt::Subscription& e : sub.subscriptions) {
        if (mqtt::ValidateTopicFilter(e.filter) != ReasonCode::kSuccess) {
          ack.reasons.push_back(s.version == mqtt::Version::k5 ? ReasonCode::kTopicFilterInvalid
                                                               : ReasonCode::kUnspecifiedError);
          continue;
        }
        auto same = std::find_if(s.subs.begin(), s.subs.end(), [&](const Sub& x) {
          return x.stream == m.stream && x.filter == AsStd(e.filter);
        });
        if (same != s.subs.end()) {
          same->qos = e.max_qos;
          same->no_local = e.no_local;
        } else {
          s.subs.push_back(Sub{std::string(e.filter), m.stream, e.max_qos, e.no_local});
        }
        routes_dirty_ = true;
        ack.reasons.push_back(static_cast<ReasonCode>(e.max_qos));
      }
      Send(s.conn, m.stream, ack, s.version);
      // Retained messages follow the SUBACK, on the subscription's stream.
      for (const mqtt::Subscription& e : sub.subscriptions) {
        if (e.retain_handling == mqtt::RetainHandling::kDoNotSend) continue;
        if (mqtt::ValidateTopicFilter(e.filter) != ReasonCode::kSuccess) continue;
        if (e.filter.starts_with("$share/")) continue;  // never to shared subscriptions
        SendRetained(s, m.stream, e.filter, e.max_qos);
      }
      return;
    }
    case PacketType::kUnsubscribe: {
      ++south_.unsubscribes;
      const auto& un = std::get<mqtt::Unsubscribe>(p);
      mqtt::Unsuback ack;
      ack.packet_id = un.packet_id;
      for (std::string_view f : un.filters) {
        // A subscription belongs to the stream that made it (EMQX): elsewhere, 0x11.
        auto it2 = std::find_if(s.subs.begin(), s.subs.end(), [&](const Sub& x) {
          return x.stream == m.stream && x.filter == f;
        });
        if (it2 != s.subs.end()) {
          s.subs.erase(it2);
          routes_dirty_ = true;
          ack.reasons.push_back(ReasonCode::kSuccess);
        } else {
          ack.reasons.push_back(ReasonCode::kNoSubscriptionExisted);
        }
      }
      if (s.version != mqtt::Version::k5) ack.reasons.clear();
      return Send(s.conn, m.stream, ack, s.version);
    }
    case PacketType::kDisconnect:
      if (m.stream != 0) return;  // a data stream's DISCONNECT ends only that stream (EMQX)
      // A normal DISCONNECT cancels the will; 0x04 (5.0) asks for it to be published.
      if (std::get<mqtt::Disconnect>(p).reason != ReasonCode::kDisconnectWithWill) s.will.clear();
      s.closing = true;
      if (!s.subs.empty()) routes_dirty_ = true;
      wheel_.Cancel(s.timer);
      Post(s.conn.core, dp::MakeMsg(MsgType::kClose, s.conn));  // app error 0
      return;
    case PacketType::kAuth:
      // Enhanced authentication is not offered (CONNACK never names a method).
      return EndSouth(s, ReasonCode::kBadAuthenticationMethod, kAppCtrlStreamDown);
    default:
      return;
  }
}

void Controlplane::OnConnect(const Msg& m, const mqtt::Connect& c, MonoNs now) {
  const mqtt::Version v = c.version;
  mqtt::Connack ack;
  std::string client_id(c.client_id);
  if (client_id.empty()) {
    if (!c.clean_start && v != mqtt::Version::k5) {
      // 3.1.1: a client without an id must ask for a clean session (spec 3.1.3-8).
      ack.reason = ReasonCode::kClientIdentifierNotValid;
    } else {
      client_id = absl::StrCat(config_.south.assigned_id_prefix, ++assigned_ids_);
    }
  }
  if (ack.reason == ReasonCode::kSuccess && config_.south.users) {
    if (!c.username) {
      if (!config_.south.allow_anonymous) ack.reason = ReasonCode::kNotAuthorized;
    } else {
      const std::string_view pw =
          c.password ? std::string_view(reinterpret_cast<const char*>(c.password->data()),
                                        c.password->size())
                     : std::string_view();
      if (!config_.south.users->Check(*c.username, pw)) ack.reason = ReasonCode::kBadUserNameOrPassword;
    }
    if (ack.reason != ReasonCode::kSuccess) ++south_.auth_failures;
  } else if (ack.reason == ReasonCode::kSuccess && !config_.south.allow_anonymous && !c.username) {
    ack.reason = ReasonCode::kNotAuthorized;
    ++south_.auth_failures;
  }
  if (ack.reason != ReasonCode::kSuccess) {
    ++south_.connack_refused;
    Send(m.conn, 0, ack, v);
    Msg close = dp::MakeMsg(MsgType::kClose, m.conn);
    close.arg = kAppCtrlStreamDown;
    Post(m.conn.core, close);
    return;
  }
  // What the session inherits: a live connection's (takeover) or a stored one's.
  std::vector<Sub> inherited;
  bool present = false;
  // Takeover: the newest connection with a client id wins; the old one hears 0x8E.
  if (auto old = by_client_id_.find(client_id); old != by_client_id_.end() && old->second != m.conn) {
    auto it = sessions_.find(old->second);
    if (it != sessions_.end()) {
      if (!it->second.closing) ++south_.takeovers;
      if (!c.clean_start) {
        for (const Sub& sub : it->second.subs)
          if (sub.stream == 0) inherited.push_back(sub);
        present = true;
      }
      it->second.taken_over = true;
      EndSouth(it->second, ReasonCode::kSessionTakenOver, kAppCtrlStreamDown);
    }
  }
  if (auto d = delayed_wills_.find(client_id); d != delayed_wills_.end()) {
    // Back before the delay ran out: the session goes on without its will, unless this
    // connection starts clean, which ends that session (its will goes now).
    wheel_.Cancel(d->second.timer);
    delayed_will_by_id_.erase(d->second.id);
    if (c.clean_start) {
      FireDelayedWill(client_id);
    } else {
      delayed_wills_.erase(d);
      ++south_.wills_cancelled;
    }
  }
  if (auto st = stored_.find(client_id); st != stored_.end()) {
    if (!c.clean_start && !present) {
      inherited = std::move(st->second.subs);
      present = true;
      ++south_.sessions_resumed;
    }
    wheel_.Cancel(st->second.timer);
    stored_by_id_.erase(st->second.id);
    stored_.erase(st);
  }
  SouthSession& s = sessions_[m.conn];
  wheel_.Cancel(s.timer);
  s = SouthSession{};
  s.conn = m.conn;
  s.client_id = client_id;
  s.version = v;
  s.keepalive_s = c.keep_alive;
  s.last_control_rx = now;
  s.subs = std::move(inherited);
  if (!s.subs.empty()) routes_dirty_ = true;
  if (!c.clean_start) {
    const uint32_t asked = v == mqtt::Version::k5
                               ? c.properties.session_expiry_interval.value_or(0)
                               : UINT32_MAX;  // 3.1.1: the session lasts until cleaned
    s.expiry_s = std::min(asked, config_.south.session_expiry_max_s);
  } else if (v == mqtt::Version::k5) {
    s.expiry_s = std::min(c.properties.session_expiry_interval.value_or(0),
                          config_.south.session_expiry_max_s);
  }
  ack.session_present = present;
  if (config_.south.server_keepalive_s && v == mqtt::Version::k5) {
    s.keepalive_s = config_.south.server_keepalive_s;
    ack.properties.server_keep_alive = s.keepalive_s;
  }
  s.limit_ns = uint64_t(s.keepalive_s) * dp::kSecNs * 3 / 2;
  if (c.will) {
    mqtt::Publish w;
    w.topic = c.will->topic;
    w.payload = c.will->payload;
    w.qos = c.will->qos;
    w.retain = c.will->retain;
    w.packet_id = w.qos == mqtt::QoS::k0 ? 0 : 1;
    if (mqtt::EncodeTo(w, mqtt::Version::k5, s.will)) s.will_retain = w.retain;
    if (v == mqtt::Version::k5) s.will_delay_s = c.will->properties.will_delay_interval.value_or(0);
  }
  by_client_id_[client_id] = m.conn;
  if (c.client_id.empty() && v == mqtt::Version::k5) {
    ack.properties.assigned_client_identifier = s.client_id;
  }
  if (v == mqtt::Version::k5 && config_.south.receive_maximum < 65535) {
    ack.properties.receive_maximum = config_.south.receive_maximum;
  }
  ++south_.connects;
  Send(m.conn, 0, ack, v);
  Msg act = dp::MakeMsg(MsgType::kActivate, m.conn);
  act.arg = uint64_t(v);
  act.aux = v == mqtt::Version::k5 ? config_.south.receive_maximum : 65535;  // 3.x has no limit to agree on
  // The client's own Receive Maximum bounds what we deliver to it unacknowledged.
  act.stream = v == mqtt::Version::k5 ? c.properties.receive_maximum.value_or(65535) : 65535;
  Post(m.conn.core, act);
  if (s.limit_ns) s.timer = wheel_.Schedule(now + s.limit_ns, CookieOf(m.conn));
}

void Controlplane::OnSouthKeepalive(SouthSession& s, MonoNs now) {
  if (s.closing || s.limit_ns == 0) return;
  const dp::ConnActivity& a = Activity(s.conn);
  const MonoNs last = dp::ConnActivity::Read(config_.south.strict_control_stream_keepalive
                                                 ? a.last_rx_control
                                                 : a.last_rx);
  const MonoNs deadline = last + s.limit_ns;
  if (now < deadline) {  // the stamp moved: re-arm lazily
    s.timer = wheel_.Schedule(deadline, CookieOf(s.conn));
    return;
  }
  ++south_.keepalive_timeouts;
  EndSouth(s, ReasonCode::kKeepAliveTimeout, kAppCtrlStreamDown);
}

void Controlplane::EndSouth(SouthSession& s, ReasonCode why, uint64_t app_error) {
  if (s.closing) return;
  s.closing = true;
  if (!s.subs.empty()) routes_dirty_ = true;
  wheel_.Cancel(s.timer);
  if (s.version == mqtt::Version::k5) {
    mqtt::Disconnect d;
    d.reason = why;
    Send(s.conn, 0, d, s.version);
  }
  Msg close = dp::MakeMsg(MsgType::kClose, s.conn);
  close.arg = app_error;
  Post(s.conn.core, close);
  // The client id stays mapped to this session until the connection is gone: a client that
  // reconnects meanwhile takes the session over (and its subscriptions, clean start 0).
}

void Controlplane::OnRetain(const Msg& m) {
  uint8_t header;
  mqtt::Bytes body;
  mqtt::Publish p;
  if (!Unframe(m.bytes(), &header, &body) ||
      !mqtt::DecodePublish(header, body, mqtt::Version::k5, &p).ok()) {
    return;
  }
  const std::string topic(p.topic);
  if (p.payload.empty()) {  // an empty retained message clears the topic
    if (retained_.erase(topic)) --south_.retained;
    return;
  }
  auto it = retained_.find(topic);
  if (it == retained_.end() && retained_.size() >= config_.south.max_retained) {
    ++south_.retained_refused;
    return;
  }
  if (it == retained_.end()) ++south_.retained;
  const auto b = m.bytes();
  retained_[topic].assign(b.begin(), b.end());
}

void Controlplane::SendRetained(const SouthSession& s, int64_t stream, std::string_view filter,
                                mqtt::QoS max) {
  for (const auto& [topic, bytes] : retained_) {
    if (!mqtt::TopicMatches(filter, topic)) continue;
    uint8_t header;
    mqtt::Bytes body;
    mqtt::Publish p;
    if (!Unframe(bytes, &header, &body) || !mqtt::DecodePublish(header, body, mqtt::Version::k5, &p).ok()) {
      continue;
    }
    p.qos = std::min(p.qos, max);
    p.retain = true;
    p.packet_id = p.qos == mqtt::QoS::k0 ? 0 : 1;  // the worker assigns the real one
    buf_.clear();
    if (!mqtt::EncodeTo(p, mqtt::Version::k5, buf_)) continue;
    Post(s.conn.core, dp::MakeMsg(MsgType::kPublish, s.conn, stream, buf_));
    ++south_.retained_sent;
  }
}

void Controlplane::PublishWill(SouthSession& s) {
  if (s.will.empty()) return;
  // Routed by the connection's worker as if the client had published it.
  Msg m = dp::MakeMsg(MsgType::kPublish, ConnRef{}, 0, s.will);
  m.aux = dp::kRouteAsPublished;
  Post(s.conn.core, m);
  if (s.will_retain) {
    Msg r = dp::MakeMsg(MsgType::kRetain, s.conn, 0, s.will);
    OnRetain(r);
    dp::ReleaseMsg(r);
  }
  s.will.clear();
  ++south_.wills_published;
}

void Controlplane::FireDelayedWill(const std::string& client_id) {
  auto d = delayed_wills_.find(client_id);
  if (d == delayed_wills_.end()) return;
  SouthSession gone;  // PublishWill's view of the session that left it
  gone.conn = d->second.conn;
  gone.will = std::move(d->second.will);
  gone.will_retain = d->second.retain;
  delayed_wills_.erase(d);
  PublishWill(gone);
}

std::optional<Controlplane::SessionView> Controlplane::Session(std::string_view client_id) const {
  auto id = by_client_id_.find(std::string(client_id));
  if (id == by_client_id_.end()) return std::nullopt;
  auto it = sessions_.find(id->second);
  if (it == sessions_.end()) return std::nullopt;
  const SouthSession& s = it->second;
  return SessionView{s.conn, s.keepalive_s, s.pingreqs, s.max_control_gap_ns, s.subs.size()};
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
    return CloseBridge(b, kAppCtrlStreamDown, now);
  }
  switch (static_cast<PacketType>(header >> 4)) {
    case PacketType::kConnack: {
      if (b.status.state != BridgeState::kConnecting) return;
      const auto& ack = std::get<mqtt::Connack>(p);
      if (ack.reason != ReasonCode::kSuccess) {
        ++b.status.connack_refused;
        return CloseBridge(b, kAppNoError, now);
      }
      b.status.state = BridgeState::kUp;
      b.reached_up = true;
      if (b.status.connects++ > 0) ++b.status.reconnects;
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
      return CloseBridge(b, kAppNoError, now);
    case BridgeState::kBackoff:
      return Dial(b, now);
    case BridgeState::kClosing: {
      // The worker never reported the close: dial anyway.
      return Dial(b, now);
    }
    case BridgeState::kUp: {
      if (b.ping_sent_at && now >= b.ping_sent_at + b.pingresp_timeout_ns) {
        ++b.status.pingresp_timeouts;  // the link is dead, whatever QUIC thinks
        return CloseBridge(b, kAppNoError, now);
      }
      if (!b.ping_sent_at && now >= NextPingDue(b)) {
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

void Controlplane::CloseBridge(Bridge& b, uint64_t app_error, MonoNs now) {
  const size_t i = size_t(&b - bridges_.data());
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
    EndSouth(s, ReasonCode::kServerShuttingDown, kAppNoError);
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

bool Controlplane::SetBridgeEnabled(std::string_view name, bool enabled, MonoNs now) {
  for (Bridge& b : bridges_) {
    if (b.removed || b.cfg.name != name) continue;
    if (b.cfg.enabled == enabled) return true;
    b.cfg.enabled = enabled;
    if (enabled) {
      b.attempt = 0;
      Dial(b, now);
    } else {
      if (b.conn.valid() && b.status.state == BridgeState::kUp) {
        Send(b.conn, 0, mqtt::Disconnect{}, b.cfg.version);
      }
      CloseBridge(b, kAppNoError, now);
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
    if (r.clients.size() >= max_clients) break;
    if (s.closing) continue;
    r.clients.push_back(ClientReport{s.client_id, ref, s.keepalive_s, uint8_t(s.version),
                                     s.subs.size(), s.pingreqs});
  }
  r.south = south_;
  r.offline_sessions = stored_.size();
  return r;
}

uint64_t Controlplane::ControlIdleNs(size_t i, MonoNs now) const {
  const Bridge& b = bridges_[i];
  if (!b.conn.valid()) return 0;
  const MonoNs last = dp::ConnActivity::Read(Activity(b.conn).last_control_wire);
  return now > last ? now - last : 0;
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
