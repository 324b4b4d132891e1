// The controlplane core: decides on every MQTT control packet the workers hand it
// (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT from south clients; CONNACK,
// SUBACK, PINGRESP from upstreams), runs every keepalive deadline on one timer wheel, and
// drives the north bridges' lifecycle (dial, CONNECT, resubscribe, PINGREQ, dead-link
// detection, reconnect with backoff and jitter).
//
// Keepalive (architecture.md, "Keepalive, the heart of the product"):
//  * North: the PINGREQ timer runs off the time a packet was last queued on the control
//    stream (the worker's stamp) and nothing else: data-stream traffic and anything received
//    never defer it. A PINGREQ goes to the worker as a ring message, which it drains before
//    writing and writes on the control stream, which is served before data. No PINGRESP
//    within pingresp_timeout declares the link dead: close, back off, reconnect, resubscribe.
//  * South: any MQTT packet on any stream keeps a connection alive (EMQX >= 5.8.2); workers
//    only stamp the time, and the wheel re-arms lazily when a deadline fires and the stamp
//    moved. strict_control_stream_keepalive counts the control stream only (EMQX <= 5.8.1).
//    Expiry sends DISCONNECT 0x8D on the control stream, then closes with app error 1.
//
// Single-threaded and clock-free: PollOnce(now) is the loop body.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "controlplane/auth.h"
#include "controlplane/timer_wheel.h"
#include "dataplane/api/activity.h"
#include "dataplane/api/msg.h"
#include "dataplane/api/ring_mesh.h"
#include "dataplane/api/routes.h"
#include "dataplane/api/time.h"
#include "mqtt/codec.h"

namespace qbridge::cp {

using dp::ConnRef;

struct SouthConfig {
  // Reproduce EMQX <= 5.8.1: only control-stream packets count as keepalive activity.
  bool strict_control_stream_keepalive = false;
  uint16_t server_keepalive_s = 0;  // assign this Keep Alive in CONNACK (5.0); 0: the client's
  std::string assigned_id_prefix = "qbridge-";
  // Username/password check (null: no user file). Without a username a client is let in
  // only when allow_anonymous.
  std::shared_ptr<UserTable> users;
  bool allow_anonymous = true;
  // A session that asked to outlive its connection (clean start 0) keeps its control-stream
  // subscriptions for min(its Session Expiry Interval, this); 3.1.1 asks for "forever".
  uint32_t session_expiry_max_s = 7200;
  size_t max_retained = 100'000;  // retained messages kept; more are refused and counted
  // QoS 1/2 PUBLISHes a client may have unacknowledged (MQTT 5 Receive Maximum, announced
  // in CONNACK when below 65535; EMQX's max_inflight). More close the stream with 0x93.
  uint16_t receive_maximum = 65535;
  // QoS 1/2 messages kept for an offline session ([mqtt] max_mqueue_len, as for a connected
  // client's queue); more are dropped and counted.
  size_t max_mqueue_len = 2048;
  // $share groups: each message to one member, in turn or the same one while it stays
  // ([mqtt] shared_subscription_strategy = "round_robin" | "sticky").
  dp::ShareStrategy share_strategy = dp::ShareStrategy::kRoundRobin;
};

// NanoMQ's `subscription` entry: remote -> local.
struct BridgeSubscription {
  std::string topic;  // remote_topic: the filter subscribed upstream
  mqtt::QoS qos = mqtt::QoS::k1;
  int slot = -1;  // data-stream slot; -1: the control stream (survives like TCP's)
  std::string local_topic;  // rewrite target ("" keeps the topic), NanoMQ semantics
  std::string prefix, suffix;
  bool operator==(const BridgeSubscription&) const = default;
};

// NanoMQ's `forwards` entry: local -> remote.
struct BridgeForward {
  std::string local_topic;   // filter over local traffic
  std::string remote_topic;  // rewrite target ("" keeps the topic)
  mqtt::QoS qos = mqtt::QoS::k1;
  bool retain = false;
  std::string prefix, suffix;
  int slot = 0;  // the data-stream slot it is written on
  bool operator==(const BridgeForward&) const = default;
};

struct BridgeConfig {
  std::string name;
  bool enabled = true;  // `enable`; switched at run time over REST
  uint16_t worker = 0;  // the core the bridge connection is pinned to
  mqtt::Version version = mqtt::Version::k311;  // proto_ver (NanoMQ's default 4)
  bool bridge_bit = true;                        // no_local_v4 (3.1.1's 0x80 level bit)
  std::string client_id;
  std::optional<std::string> username, password;
  uint16_t keepalive_s = 60;
  bool clean_start = true;
  uint64_t pingresp_timeout_ns = 0;  // 0: min(keepalive / 2, 30 s)
  uint64_t backoff_base_ns = 500 * dp::kMsNs;
  uint64_t backoff_max_ns = 5 * dp::kSecNs;  // backoff_max
  uint64_t connect_timeout_ns = 10 * dp::kSecNs;  // dial to CONNACK
  std::vector<BridgeSubscription> subscriptions;
  std::vector<BridgeForward> forwards;
  // hybrid_bridging: upstreams to dial in turn (server first); a dial that never reached
  // CONNACK moves on to the next one.
  size_t servers = 1;
  bool operator==(const BridgeConfig&) const = default;
};

struct ControlplaneConfig {
  uint64_t tick_ns = dp::kMsNs;
  SouthConfig south;
  std::vector<BridgeConfig> bridges;
  uint64_t seed = 0;  // reconnect jitter; 0: from the clock
};

// Checks the relations between a bridge's timers that NanoMQ users get wrong
// (mqtt-over-quic.md 3.3): QUIC PINGs must come well inside the idle timeout, and the
// broker's MQTT keepalive deadline (1.5 x keepalive) must expire before QUIC's does.
absl::Status ValidateBridgeTimers(std::string_view bridge, uint64_t keepalive_ns,
                                  uint64_t quic_keepalive_ns, uint64_t quic_idle_timeout_ns);

enum class BridgeState : uint8_t { kIdle, kDialing, kConnecting, kUp, kClosing, kBackoff };
const char* BridgeStateName(BridgeState s);

struct BridgeStatus {
  BridgeState state = BridgeState::kIdle;
  uint64_t dials = 0;
  uint64_t connects = 0;          // CONNACK success
  uint64_t reconnects = 0;        // connects after the first
  uint64_t connack_refused = 0;
  uint64_t pingreqs_sent = 0;
  uint64_t pingresps = 0;
  uint64_t pingresp_timeouts = 0;  // links declared dead
  uint64_t rtt_last_ns = 0, rtt_max_ns = 0;
  // PINGRESP round trips: < 1 ms, 10 ms, 100 ms, 1 s, 10 s, more.
  std::array<uint64_t, 6> rtt_hist{};
  uint64_t max_pingreq_gap_ns = 0;  // longest time between two PINGREQs on one connection
  // Longest the control stream went without a packet out before a PINGREQ ended the silence
  // (it must stay under the keepalive: the NanoMQ incident is this growing past it).
  uint64_t max_control_silence_ns = 0;
  uint64_t subacks = 0, suback_failures = 0;
  uint64_t keepalive_kicks = 0;     // closed with app error 1 after DISCONNECT 0x8D
  std::map<uint64_t, uint64_t> closes_by_app_error;
  std::map<uint8_t, uint64_t> disconnects_by_reason;  // DISCONNECT packets from upstream
  MonoNs last_backoff_ns = 0;
  size_t server = 0;  // which upstream (server, then hybrid_servers) the bridge dials now
  MonoNs up_since = 0;  // when the connection now up got its CONNACK; 0: not up
  // The bridge's latest connection events, oldest first, at most kMaxEvents: what REST and
  // the dashboard show as reconnects with their reasons.
  struct Event {
    MonoNs at;
    std::string what;
  };
  static constexpr size_t kMaxEvents = 16;
  std::deque<Event> events;
};

struct SouthStats {
  uint64_t connects = 0, connack_refused = 0, takeovers = 0;
  uint64_t auth_failures = 0;
  uint64_t sessions_resumed = 0, sessions_expired = 0;
  uint64_t keepalive_timeouts = 0;
  uint64_t pingreqs = 0;
  uint64_t subscribes = 0, unsubscribes = 0;
  uint64_t malformed = 0;
  uint64_t closes = 0;
  uint64_t snapshots_built = 0, snapshots_freed = 0;
  uint64_t retained = 0, retained_refused = 0, retained_sent = 0;
  uint64_t wills_published = 0;
  uint64_t wills_delayed = 0;    // waited for their Will Delay Interval...
  uint64_t wills_cancelled = 0;  // ...and were not sent: the client came back in time
  // Offline queues of persistent sessions (QoS 1/2 for a client that is away).
  uint64_t offline_queued = 0;     // messages queued
  uint64_t offline_delivered = 0;  // ... handed to the client's new connection
  uint64_t offline_dropped = 0;    // ... dropped: queue full, or the session ended or expired
};

class Controlplane {
 public:
  Controlplane(ControlplaneConfig config, dp::RingMesh* rings,
               std::vector<dp::ActivityTable*> activity);
  ~Controlplane();

  // Dials every bridge.
  void Start(MonoNs now);
  // One loop iteration: drain the workers' rings, run due timers, flush. True if it did work.
  bool PollOnce(MonoNs now);
  // Starts an orderly stop: every bridge sends DISCONNECT and closes; every south client is
  // told DISCONNECT 0x8B (server shutting down, 5.0) and closed. Keep polling until
  // ShutdownDone() or a deadline.
  void Shutdown(MonoNs now);
  bool ShutdownDone() const;
  // `enable` at run time (REST): off closes the bridge and keeps it closed; on dials.
  bool SetBridgeEnabled(std::string_view name, bool enabled, MonoNs now);
  // SIGHUP: new forwards and subscriptions for a running bridge, without reconnecting it.
  // Forwards take effect with the next routing snapshot; subscriptions added are subscribed
  // and removed ones unsubscribed at once when the bridge is up. False for an unknown name.
  bool UpdateBridgeRules(std::string_view name, const std::vector<BridgeForward>& forwards,
                         const std::vector<BridgeSubscription>& subscriptions, MonoNs now);
  // SIGHUP: a new bridge at the next index. `dials` holds one handle per worker from
  // dp::Runtime::PrepareBridge; each worker learns the bridge before it is dialled.
  void AddBridge(const BridgeConfig& config, const std::vector<uint64_t>& dials, MonoNs now);
  // SIGHUP: a bridge gone from the file: its subscriptions are dropped upstream, it
  // disconnects and stays closed; its index is never reused. False for an unknown name.
  bool RemoveBridge(std::string_view name, MonoNs now);
  // A bridge by that name runs (it exists and no reload removed it).
  bool HasBridge(std::string_view name) const {
    for (const Bridge& b : bridges_)
      if (!b.removed && b.cfg.name == name) return true;
    return false;
  }

  // What REST and metrics show, copied out of the loop.
  struct BridgeReport {
    std::string name;
    std::string state;
    bool enabled;
    uint16_t keepalive_s;
    uint64_t pingresp_timeout_ns;
    uint16_t worker;
    uint64_t control_idle_ns;
    BridgeStatus status;
    // The rules running now (SIGHUP may have changed them since start-up).
    std::vector<BridgeForward> forwards;
    std::vector<BridgeSubscription> subscriptions;
    bool removed = false;  // taken out by a reload (REST and metrics skip it)
  };
  struct ClientReport {
    std::string client_id;
    ConnRef conn;
    uint16_t keepalive_s;
    uint8_t proto_ver;
    size_t subscriptions;
    uint64_t pingreqs;
    bool tcp;          // MQTT over TCP, not QUIC
    size_t streams;    // the control stream plus the data streams that carried control packets
    MonoNs connected_at;
  };
  struct Report {
    MonoNs at = 0;
    std::vector<BridgeReport> bridges;
    std::vector<ClientReport> clients;  // at most MakeReport's max_clients
    size_t sessions = 0;                // connected clients, all of them
    SouthStats south;
    size_t offline_sessions = 0;
  };
  Report MakeReport(MonoNs now, size_t max_clients = 10'000) const;
  MonoNs NextDeadline() const { return wheel_.NextExpiry(); }

  const BridgeStatus& bridge(size_t i) const { return bridges_[i].status; }
  size_t bridge_count() const { return bridges_.size(); }
  // How long the bridge's control stream has been without a queued packet.
  uint64_t ControlIdleNs(size_t i, MonoNs now) const;
  const SouthStats& south() const { return south_; }
  const BridgeConfig& bridge_config(size_t i) const { return bridges_[i].cfg; }
  size_t sessions() const { return sessions_.size(); }
  size_t offline_sessions() const { return stored_.size(); }
  // A south session's keepalive figures, by client id (tests, REST).
  struct SessionView {
    ConnRef conn;
    uint16_t keepalive_s;
    uint64_t pingreqs;
    uint64_t max_control_gap_ns;  // longest gap between control-stream packets received
    size_t subscriptions;
  };
  std::optional<SessionView> Session(std::string_view client_id) const;

 private:
  struct Sub {
    std::string filter;
    int64_t stream;
    mqtt::QoS qos;
    bool no_local = false;
  };
  struct SouthSession {
    ConnRef conn;
    std::string client_id;
    mqtt::Version version = mqtt::Version::k5;
    uint16_t keepalive_s = 0;
    uint32_t expiry_s = 0;  // how long the session outlives the connection
    uint64_t limit_ns = 0;  // 1.5 x keepalive; 0: no keepalive
    TimerId timer;
    bool closing = false;
    bool taken_over = false;
    std::vector<Sub> subs;
    uint64_t pingreqs = 0;
    // The will, encoded as the PUBLISH it becomes (5.0 encoding); empty: none or cancelled.
    std::vector<uint8_t> will;
    bool will_retain = false;
    uint32_t will_delay_s = 0;  // 5.0 Will Delay Interval
    MonoNs last_control_rx = 0;
    uint64_t max_control_gap_ns = 0;
    bool tcp = false;
    MonoNs connected_at = 0;
    std::optional<uint64_t> resumed_from;  // the stored session it took over (its offline id)
    bool stored = false;  // already kept as an offline session (when it began closing)
    std::vector<int64_t> data_streams;  // data streams that carried control packets (open ones)
  };
  // A session without a connection, waiting for its client (clean start 0).
  struct StoredSession {
    std::vector<Sub> subs;  // control-stream subscriptions only (data streams' die)
    TimerId timer;
    uint64_t id;
    std::deque<std::vector<uint8_t>> queue;  // QoS 1/2 PUBLISHes for it (5.0 encoding), in order
  };
  struct Bridge {
    BridgeConfig cfg;
    BridgeStatus status;
    ConnRef conn;
    TimerId timer;
    uint32_t attempt = 0;
    uint64_t pingresp_timeout_ns = 0;
    MonoNs ping_sent_at = 0;       // 0: no PINGREQ outstanding
    MonoNs ping_requested_at = 0;  // our last control-stream write request
    MonoNs last_pingreq_at = 0;
    uint8_t last_disconnect_reason = 0;
    std::string close_why;  // why we closed the connection now closing (CloseBridge's `why`)
    uint16_t next_packet_id = dp::kControlPacketIdFirst;
    uint64_t dial = 0;  // the current dial's number: reports about older ones are ignored
    bool reached_up = false;  // this dial got CONNACK
    bool removed = false;     // taken out by a reload: closed for good, name free again
    // Added by a reload: its forwards enter the routes only once every worker has acked a
    // snapshot sent after its kAddBridge (so none routes to a bridge it does not know).
    uint64_t routes_after_version = 0;
    std::vector<BridgeForward> pending_forwards;
  };

  static Bridge MakeBridge(const BridgeConfig& c);
  static uint64_t CookieOf(ConnRef r) {
    return uint64_t(r.core) << 48 | uint64_t(r.gen) << 32 | r.slot;
  }
  static ConnRef RefOf(uint64_t c) {
    return ConnRef{uint16_t((c >> 48) & 0x7fff), uint16_t(c >> 32), uint32_t(c)};
  }
  static constexpr uint64_t kBridgeCookie = uint64_t(1) << 63;
  static constexpr uint64_t kStoredCookie = uint64_t(1) << 62;
  static constexpr uint64_t kWillCookie = uint64_t(1) << 61;
  void StoreSession(const SouthSession& s, MonoNs now);
  size_t stored_sessions() const { return stored_.size(); }

  void OnMsg(dp::Msg& m, MonoNs now);
  void OnTimer(uint64_t cookie, MonoNs now);
  // South.
  void OnSouthPacket(const dp::Msg& m, MonoNs now);
  void OnConnect(const dp::Msg& m, const mqtt::Connect& c, MonoNs now);
  void OnSouthKeepalive(SouthSession& s, MonoNs now);
  void EndSouth(SouthSession& s, mqtt::ReasonCode why, uint64_t app_error, MonoNs now);
  // A session begins closing (its DISCONNECT, or EndSouth): it stops being a live route at
  // once and, unless taken over, is kept as an offline session now (its messages queue).
  void BeginClosing(SouthSession& s, MonoNs now);
  void OnRetain(const dp::Msg& m);
  void OnOffline(const dp::Msg& m);  // a message for an offline session: queue it
  void SendRetained(const SouthSession& s, int64_t stream, std::string_view filter, mqtt::QoS max);
  void PublishWill(SouthSession& s);
  // North.
  Bridge* BridgeOf(ConnRef r);
  void Dial(Bridge& b, MonoNs now);
  void OnBridgeUp(Bridge& b, const dp::Msg& m, MonoNs now);
  void OnBridgePacket(Bridge& b, const dp::Msg& m, MonoNs now);
  void OnBridgeTimer(Bridge& b, MonoNs now);
  void OnBridgeClosed(Bridge& b, uint64_t app_error, MonoNs now);
  void ArmBridgeKeepalive(Bridge& b, MonoNs now);
  MonoNs NextPingDue(const Bridge& b) const;
  // `why` names the cause in the bridge's events (empty: the close itself will say).
  void CloseBridge(Bridge& b, uint64_t app_error, MonoNs now, std::string_view why = {});
  void NoteBridgeEvent(Bridge& b, MonoNs now, std::string what);
  // Output.
  void Send(ConnRef to, int64_t stream, const mqtt::Packet& p, mqtt::Version v);
  void Post(uint16_t core, dp::Msg m);
  void Flush();
  // Routing: rebuilt once per iteration when subscriptions changed, posted to every worker,
  // freed once every worker has moved past it.
  void PublishRoutes();
  void OnSnapshotAck(uint16_t core, uint64_t version);
  const dp::ConnActivity& Activity(ConnRef r) const {
    return activity_[r.core]->at(r.slot);
  }

  ControlplaneConfig config_;
  dp::RingMesh* rings_;
  std::vector<dp::ActivityTable*> activity_;
  TimerWheel wheel_;
  std::mt19937_64 rng_;
  absl::flat_hash_map<ConnRef, SouthSession> sessions_;
  absl::flat_hash_map<std::string, ConnRef> by_client_id_;
  absl::flat_hash_map<std::string, StoredSession> stored_;
  absl::flat_hash_map<std::string, std::vector<uint8_t>> retained_;  // topic -> PUBLISH
  absl::flat_hash_map<uint64_t, std::string> stored_by_id_;
  // Offline ids of sessions resumed since, to their connection: a message a worker routed by
  // an older snapshot follows to the client (until that connection ends).
  absl::flat_hash_map<uint64_t, ConnRef> resumed_;
  uint64_t next_stored_id_ = 0;
  // Wills waiting out their Will Delay Interval, by client id; cancelled if the client
  // comes back to its session first.
  struct DelayedWill {
    std::vector<uint8_t> will;
    bool retain = false;
    ConnRef conn;  // the connection that left it (its core routes it)
    TimerId timer;
    uint64_t id = 0;
  };
  absl::flat_hash_map<std::string, DelayedWill> delayed_wills_;
  absl::flat_hash_map<uint64_t, std::string> delayed_will_by_id_;
  void FireDelayedWill(const std::string& client_id);
  bool shutting_down_ = false;
  std::vector<Bridge> bridges_;
  std::vector<std::vector<dp::Msg>> outbox_;  // per worker, flushed once per iteration
  uint64_t assigned_ids_ = 0;
  SouthStats south_;
  std::vector<uint8_t> buf_;
  bool routes_dirty_ = true;
  uint64_t routes_version_ = 0;
  // $share groups' ids ("name\0filter"), stable while the controlplane runs so a worker can
  // find a group again in a newer snapshot (redelivery).
  absl::flat_hash_map<std::string, uint32_t> share_ids_;
  uint32_t last_share_id_ = 0;  // ids are never reused
  std::vector<std::unique_ptr<dp::RouteSnapshot>> snapshots_;  // oldest first; back = current
  std::vector<uint64_t> acked_version_;                        // per worker
};

}  // namespace qbridge::cp
