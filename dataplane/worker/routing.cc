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
    if (e.key.kind == RouteKey::kShared) {
      any = true;
      return (void)DeliverShared(e.key.group, p, ConnRef{});
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
  uint32_t& turn = share_next_[gi];
  for (size_t tried = 0; tried < n; ++tried) {
    const size_t at = (turn + tried) % n;
    const SharedMember& m = g.members[at];
    if (m.conn == exclude) continue;
    mqtt::Publish out = p;
    out.qos = std::min(p.qos, m.qos);
    out.retain = false;
    const bool ok = m.conn.core == config_.core ? DeliverSouth(m.conn, m.stream, out, g.id)
                                                : PostPublish(m.conn.core, m.conn, m.stream, 0, out, nullptr, g.id);
    if (!ok) continue;  // gone, or its queue is full: the next member
    // Round robin: the next one after this member; sticky: this member again.
    turn = uint32_t(routes_->share_strategy == ShareStrategy::kSticky ? at : (at + 1) % n);
    stats_.routed_shared.Inc();
    return true;
  }
  stats_.drop_shared_no_member.Inc();
  return false;
}

void Worker::RedeliverShared(Conn& c) {
  auto again = [&](uint32_t group, const quic::Buffer& packet) {
    uint32_t gi = UINT32_MAX;
    for (uint32_t i = 0; routes_ && i < routes_->shared.size(); ++i)
      if (routes_->shared[i].id == group) gi = i;
    bool done = false;
    mqtt::Framer f(mqtt::kMaxPacketSize);
    (void)f.Feed(packet.span(), [&](const mqtt::Frame& fr) {
      mqtt::Publish p;
      if (gi != UINT32_MAX && mqtt::DecodePublish(fr.header, fr.body, c.version, &p).ok()) {
        p.dup = false;  // a first delivery to the member that gets it
        p.packet_id = 0;
        done = DeliverShared(gi, p, c.ref());
      }
      return false;
    });
    if (done) {
      stats_.shared_redelivered.Inc();
    } else if (gi == UINT32_MAX) {
      stats_.drop_shared_no_member.Inc();  // the group is gone (its last member left)
    }
  };
  for (const Conn::SharedInflight& d : c.shared_inflight) again(d.group, d.packet);
  for (const Conn::QueuedDelivery& d : c.out_queue)
    if (d.shared) again(d.shared, d.packet);
  c.shared_inflight.clear();
}

}  // namespace qbridge::dp
