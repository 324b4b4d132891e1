// Route lookups: a received PUBLISH against the controlplane's current routing snapshot
// (read-only here; the controlplane owns and frees it), to local subscribers, to bridges on
// this core, or to other cores by ring. Inbound topic rewrite for deliveries from an
// upstream; never back upstream (no bridge loops).

#include "dataplane/worker/worker.h"

#include <algorithm>
#include <optional>
#include <string>

#include "dataplane/worker/conn.h"
#include "mqtt/topic.h"

namespace qbridge::dp {

Worker::Routed Worker::Route(const Conn& from, const mqtt::Publish& in, const Origin* origin) {
  Routed out_r;
  if (routes_ == nullptr) {
    stats_.drop_no_route.Inc();
    return out_r;
  }
  // What goes on: no DUP, no packet id, no alias (each hop assigns its own). A copy of the
  // 424-byte PUBLISH only when one of them, or the topic, changes.
  const mqtt::Publish* pp = &in;
  std::optional<mqtt::Publish> copy;
  auto own = [&]() -> mqtt::Publish& {
    if (!copy) pp = &copy.emplace(in);
    return *copy;
  };
  if (in.dup || in.packet_id != 0 || in.properties.topic_alias) {
    mqtt::Publish& c = own();
    c.dup = false;
    c.packet_id = 0;
    c.properties.topic_alias.reset();
  }
  if (from.north) {
    // A delivery from an upstream: its subscription rule maps the topic to a local one.
    for (const InboundRoute& r : routes_->inbound) {
      if (r.bridge == from.bridge && mqtt::TopicMatches(r.remote_filter, in.topic)) {
        if (r.rewrite.identity()) break;
        if (!r.rewrite.ApplyTo(in.topic, local_topic_)) {
          stats_.drop_no_route.Inc();
          return out_r;
        }
        own().topic = local_topic_;
        break;
      }
    }
  }
  const mqtt::Publish& p = *pp;
  bool any = false;
  routes_->trie.Match(p.topic, [&](const mqtt::TopicTrie<RouteKey, RouteValue>::Entry& e) {
    if (e.key.kind == RouteKey::kShared) {
      any = true;
      return (void)DeliverShared(e.key.group, p, ConnRef{});
    }
    mqtt::Publish out = p;
    if (e.key.kind == RouteKey::kForward) {
      if (from.north) return;  // never back upstream: no bridge loops
      const ForwardRoute& f = routes_->forwards[e.key.rule];
      if (!f.rewrite.identity()) {  // no string built when the rule keeps the topic
        if (!f.rewrite.ApplyTo(p.topic, remote_topic_)) return stats_.drop_route_failed.Inc();
        out.topic = remote_topic_;
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
    if (e.key.kind == RouteKey::kOffline) {
      out.qos = std::min(p.qos, e.value.qos);
      if (out.qos == mqtt::QoS::k0) return;  // only QoS 1/2 wait for a client that is away
      out.retain = false;
      any = true;
      return QueueOffline(e.key.session, out);
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

bool Worker::DeliverShared(uint32_t gi, const mqtt::Publish& p, ConnRef exclude) {
  const SharedGroup& g = routes_->shared[gi];
  const size_t n = g.members.size();
  ShareTurn& turn = share_turn_[g.id];
  size_t start = n ? turn.next % n : 0;
  if (routes_->share_strategy == ShareStrategy::kSticky && turn.sticky.valid()) {
    for (size_t i = 0; i < n; ++i) {
      if (g.members[i].conn == turn.sticky && g.members[i].stream == turn.sticky_stream) start = i;
    }
  }
  for (size_t tried = 0; tried < n; ++tried) {
    const size_t at = (start + tried) % n;
    const SharedMember& m = g.members[at];
    if (m.conn == exclude) continue;
    mqtt::Publish out = p;
    out.qos = std::min(p.qos, m.qos);
    out.retain = false;
    // A member that cannot take it now (gone, closing, its queue full) is passed over,
    // not counted as a drop. One on another core is trusted to (it may be gone by then).
    const bool ok = m.conn.core == config_.core
                        ? SouthCanTake(m.conn, out.qos) && DeliverSouth(m.conn, m.stream, out, g.id, p.qos)
                        : PostPublish(m.conn.core, m.conn, m.stream, 0, out, nullptr, SharedTag(g.id, p.qos));
    if (!ok) continue;
    turn.next = uint32_t((at + 1) % n);  // round robin: the one after it next time
    turn.sticky = m.conn;                // sticky: this one again while it stays
    turn.sticky_stream = m.stream;
    stats_.routed_shared.Inc();
    return true;
  }
  stats_.drop_shared_no_member.Inc();
  return false;
}

void Worker::RedeliverOne(Conn& c, uint32_t group, mqtt::QoS qos, const quic::Buffer& packet) {
  uint32_t gi = UINT32_MAX;
  for (uint32_t i = 0; routes_ && i < routes_->shared.size(); ++i)
    if (routes_->shared[i].id == group) gi = i;
  if (gi == UINT32_MAX) {  // the group is gone (its last member left)
    stats_.drop_shared_no_member.Inc();
    return;
  }
  mqtt::Framer f(mqtt::kMaxPacketSize);
  (void)f.Feed(packet.span(), [&](const mqtt::Frame& fr) {
    mqtt::Publish p;
    if (mqtt::DecodePublish(fr.header, fr.body, c.version, &p).ok()) {
      p.dup = false;  // a first delivery to the member that gets it
      p.packet_id = 0;
      p.qos = qos;    // as published: the next member may have been granted more
      if (DeliverShared(gi, p, c.ref())) stats_.shared_redelivered.Inc();
    }
    return false;
  });
}

void Worker::RedeliverShared(Conn& c) {
  for (const Conn::SharedInflight& d : c.shared_inflight) RedeliverOne(c, d.group, d.qos, d.packet);
  for (size_t i = 0; i < c.out_queue.size(); ++i) {
    const Conn::QueuedDelivery& d = c.out_queue[i];
    if (d.shared) RedeliverOne(c, d.shared, d.shared_qos, d.packet);
  }
  c.shared_inflight.clear();
}

}  // namespace qbridge::dp
