// The routing table's owner: rebuilds the snapshot workers route by when subscriptions or
// forwards changed (at most once per iteration), posts it to every worker, and frees an old
// one only after every worker has acknowledged a newer one (RCU). Workers read a snapshot,
// never change it.

#include "controlplane/controlplane.h"

#include <algorithm>

#include "controlplane/cp_internal.h"
#include "mqtt/rewrite.h"
#include "mqtt/topic.h"

namespace qbridge::cp {
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
  snap->share_strategy = config_.south.share_strategy;
  absl::flat_hash_map<std::string, uint32_t> group_index;  // "name\0filter" -> index in shared
  for (const auto& [ref, sess] : sessions_) {
    if (sess.closing) continue;
    for (const Sub& sub : sess.subs) {
      mqtt::ParsedFilter pf;
      if (mqtt::ParseFilter(sub.filter, &pf) == mqtt::ReasonCode::kSuccess && pf.shared()) {
        // One trie entry per group; its members are the connections subscribed to it.
        std::string name(pf.share_group);
        name.push_back('\0');
        name.append(pf.filter);
        auto [it, added] = group_index.try_emplace(name, uint32_t(snap->shared.size()));
        if (added) {
          auto [id, fresh] = share_ids_.try_emplace(name, 0);
          if (fresh) id->second = ++last_share_id_;
          dp::SharedGroup g;
          g.id = id->second;
          g.name = std::string(pf.share_group);
          g.filter = std::string(pf.filter);
          snap->shared.push_back(std::move(g));
          dp::RouteKey key;
          key.kind = dp::RouteKey::kShared;
          key.group = it->second;
          snap->trie.Insert(pf.filter, key, dp::RouteValue{mqtt::QoS::k2, false});
        }
        snap->shared[it->second].members.push_back(dp::SharedMember{ref, sub.stream, sub.qos});
        continue;
      }
      dp::RouteKey key;
      key.kind = dp::RouteKey::kSouth;
      key.conn = ref;
      key.stream = sub.stream;
      snap->trie.Insert(sub.filter, key, dp::RouteValue{sub.qos, sub.no_local});
    }
  }
  // Members in a fixed order (the sessions map's order may change as it grows), and the ids
  // of groups that are gone forgotten.
  for (dp::SharedGroup& g : snap->shared) {
    std::sort(g.members.begin(), g.members.end(), [](const dp::SharedMember& x, const dp::SharedMember& y) {
      return std::tie(x.conn.core, x.conn.slot, x.conn.gen, x.stream) <
             std::tie(y.conn.core, y.conn.slot, y.conn.gen, y.stream);
    });
  }
  absl::erase_if(share_ids_, [&](const auto& e) { return !group_index.contains(e.first); });
  // Offline persistent sessions: QoS 1/2 messages matching their subscriptions go to the
  // controlplane, which queues them for the client's return (OnOffline).
  // ($share subscriptions of an offline session are not: its group's connected members
  // take the messages.)
  for (const auto& [client, st] : stored_) {
    for (const Sub& sub : st.subs) {
      if (sub.qos == mqtt::QoS::k0 || sub.filter.starts_with("$share/")) continue;
      dp::RouteKey key;
      key.kind = dp::RouteKey::kOffline;
      key.session = st.id;
      snap->trie.Insert(sub.filter, key, dp::RouteValue{sub.qos, false});
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

}  // namespace qbridge::cp
