// South sessions: CONNECT (authentication, takeover, session resume, CONNACK), SUBSCRIBE
// and UNSUBSCRIBE decisions, PINGREQ, DISCONNECT, the connection-scope keepalive deadline
// (architecture.md, "South"), offline sessions waiting for their client, retained messages,
// and wills (with Will Delay Interval). The workers carry the bytes; this file decides.

#include "controlplane/controlplane.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "controlplane/cp_internal.h"
#include "mqtt/topic.h"

namespace qbridge::cp {
void Controlplane::StoreSession(const SouthSession& s, MonoNs now) {
  if (s.expiry_s == 0 || s.client_id.empty()) return;
  StoredSession st;
  for (const Sub& sub : s.subs)
    if (sub.stream == 0) st.subs.push_back(sub);
  st.id = next_stored_id_++;
  st.timer = wheel_.Schedule(now + uint64_t(s.expiry_s) * dp::kSecNs, kStoredCookie | st.id);
  if (auto old = stored_.find(s.client_id); old != stored_.end()) {
    south_.offline_dropped += old->second.queue.size();
    wheel_.Cancel(old->second.timer);
    stored_by_id_.erase(old->second.id);
  }
  stored_by_id_[st.id] = s.client_id;
  if (!st.subs.empty()) routes_dirty_ = true;  // its subscriptions now queue (OnOffline)
  stored_[s.client_id] = std::move(st);
}

void Controlplane::OnOffline(const Msg& m) {
  auto id = stored_by_id_.find(m.arg);
  if (id == stored_by_id_.end()) {
    // The client came back while the message was on its way (a worker still routed by the
    // older snapshot): it goes to the new connection, after what was queued (it may follow
    // live messages routed by the newer snapshot).
    if (auto r = resumed_.find(m.arg); r != resumed_.end()) {
      auto s = sessions_.find(r->second);
      if (s != sessions_.end() && !s->second.closing) {
        Post(r->second.core, dp::MakeMsg(MsgType::kPublish, r->second, 0, m.bytes()));
        ++south_.offline_delivered;
        return;
      }
    }
    ++south_.offline_dropped;  // the session ended
    return;
  }
  auto found = stored_.find(id->second);
  if (found == stored_.end()) {
    ++south_.offline_dropped;
    return;
  }
  StoredSession& st = found->second;
  if (st.queue.size() >= config_.south.max_mqueue_len) {
    ++south_.offline_dropped;
    return;
  }
  const auto b = m.bytes();
  st.queue.emplace_back(b.begin(), b.end());
  ++south_.offline_queued;
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
  if (m.stream != 0 &&
      std::find(s.data_streams.begin(), s.data_streams.end(), m.stream) == s.data_streams.end()) {
    s.data_streams.push_back(m.stream);
  }
  if (m.stream == 0) {
    if (s.last_control_rx) s.max_control_gap_ns = std::max(s.max_control_gap_ns, now - s.last_control_rx);
    s.last_control_rx = now;
  }
  mqtt::Packet p;
  if (!mqtt::Decode(header, body, s.version, &p).ok()) {
    ++south_.malformed;
    return EndSouth(s, ReasonCode::kMalformedPacket, kAppCtrlStreamDown, now);
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
          return x.stream == m.stream && x.filter == e.filter;
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
      BeginClosing(s, now);
      Post(s.conn.core, dp::MakeMsg(MsgType::kClose, s.conn));  // app error 0
      return;
    case PacketType::kAuth:
      // Enhanced authentication is not offered (CONNACK never names a method).
      return EndSouth(s, ReasonCode::kBadAuthenticationMethod, kAppCtrlStreamDown, now);
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
      EndSouth(it->second, ReasonCode::kSessionTakenOver, kAppCtrlStreamDown, now);
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
  std::deque<std::vector<uint8_t>> offline;  // what waited for this client, in order
  std::optional<uint64_t> resumed_from;
  if (auto st = stored_.find(client_id); st != stored_.end()) {
    if (!st->second.subs.empty()) routes_dirty_ = true;  // its offline routes go
    if (!c.clean_start) {
      // (A session taken over while closing was stored already: its subscriptions came
      // with the takeover, what queued since comes from here.)
      if (!present) {
        inherited = std::move(st->second.subs);
        ++south_.sessions_resumed;
      }
      offline = std::move(st->second.queue);
      resumed_from = st->second.id;
      present = true;
    } else {
      south_.offline_dropped += st->second.queue.size();  // a clean start ends the old session
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
  s.tcp = (m.flags & dp::kMsgTcp) != 0;
  s.connected_at = now;
  s.resumed_from = resumed_from;
  if (resumed_from) resumed_[*resumed_from] = m.conn;
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
  // The messages that waited, in order, after the activation on the same ring: the worker
  // delivers them within the client's Receive Maximum and queues the rest. They go before
  // the routing snapshot that makes this connection a live route.
  for (const std::vector<uint8_t>& p : offline) {
    Post(m.conn.core, dp::MakeMsg(MsgType::kPublish, m.conn, 0, p));
    ++south_.offline_delivered;
  }
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
  EndSouth(s, ReasonCode::kKeepAliveTimeout, kAppCtrlStreamDown, now);
}

void Controlplane::BeginClosing(SouthSession& s, MonoNs now) {
  s.closing = true;
  // No longer a live route: kept as an offline session from now, not after the
  // connection's linger (a takeover hands it to the new connection instead).
  if (!s.taken_over && !s.stored) {
    StoreSession(s, now);
    s.stored = true;
  }
  if (!s.subs.empty()) routes_dirty_ = true;
  wheel_.Cancel(s.timer);
}

void Controlplane::EndSouth(SouthSession& s, ReasonCode why, uint64_t app_error, MonoNs now) {
  if (s.closing) return;
  BeginClosing(s, now);
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

}  // namespace qbridge::cp
