// The routing table as workers see it: an immutable snapshot the controlplane builds and
// posts to every worker (RCU style). A worker swaps its pointer when the message arrives
// and acknowledges; the controlplane frees a snapshot only after every worker has
// acknowledged a newer one, so a lookup never races a free and needs no lock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/api/msg.h"
#include "mqtt/rewrite.h"
#include "mqtt/topic_trie.h"
#include "mqtt/types.h"

namespace qbridge::dp {

// Who a matching PUBLISH goes to.
struct RouteKey {
  // kOffline: a disconnected persistent session's subscription; QoS 1/2 matches go to the
  // controlplane, which queues them until the client is back. kShared: a $share group;
  // each match goes to one of its members.
  enum Kind : uint8_t { kSouth, kForward, kOffline, kShared };
  Kind kind = kSouth;
  ConnRef conn;        // kSouth: the subscriber's connection
  int64_t stream = 0;  // kSouth: the stream that made the subscription (EMQX model)
  uint32_t rule = 0;   // kForward: index into RouteSnapshot::forwards
  uint64_t session = 0;  // kOffline: the stored session's id
  uint32_t group = 0;    // kShared: index into RouteSnapshot::shared
  bool operator==(const RouteKey&) const = default;
};

struct RouteValue {
  mqtt::QoS qos = mqtt::QoS::k0;  // the subscription's (or rule's) maximum QoS
  bool no_local = false;          // kSouth: not back to the connection that published
};

// A bridge forward rule (local -> remote), NanoMQ's `forwards`.
struct ForwardRoute {
  uint32_t bridge = 0;
  uint16_t core = 0;  // the worker the bridge's connection is pinned to
  int slot = 0;       // data-stream slot the rule writes on
  mqtt::QoS qos = mqtt::QoS::k1;
  bool retain = false;
  mqtt::TopicRewrite rewrite;
};

// A bridge subscription rule (remote -> local), NanoMQ's `subscription`.
struct InboundRoute {
  uint32_t bridge = 0;
  std::string remote_filter;
  mqtt::TopicRewrite rewrite;
};

// A shared subscription group ($share/NAME/FILTER, MQTT 5 4.8.2, and 3.1.1 as EMQX accepts
// it): its connected members.
struct SharedMember {
  ConnRef conn;
  int64_t stream = 0;
  mqtt::QoS qos = mqtt::QoS::k0;
};
struct SharedGroup {
  uint32_t id = 0;  // the same in every snapshot while the group exists (never 0)
  std::string name, filter;
  std::vector<SharedMember> members;
};
// How a worker picks the member ([mqtt] shared_subscription_strategy, EMQX's names): in
// turn, or the same one until it is gone. Each worker keeps its own turn (no shared state
// between cores), so with several workers "in turn" holds per worker.
enum class ShareStrategy : uint8_t { kRoundRobin, kSticky };

struct RouteSnapshot {
  uint64_t version = 0;
  mqtt::TopicTrie<RouteKey, RouteValue> trie;
  std::vector<ForwardRoute> forwards;
  std::vector<InboundRoute> inbound;
  std::vector<SharedGroup> shared;
  ShareStrategy share_strategy = ShareStrategy::kRoundRobin;
};

}  // namespace qbridge::dp
