// The dataplane as the appliance's main() starts it: worker cores on the chosen backend
// (kernel UDP sockets, or a DPDK port), the south QUIC listener, the north bridges' QUIC
// dials. Plain settings only (file paths, addresses, durations in ns), so the controlplane
// configures it without seeing quic/ or DPDK.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/api/activity.h"
#include "dataplane/api/counters.h"
#include "dataplane/api/ring_mesh.h"

namespace qbridge::dp {

struct TlsFiles {
  std::string certfile, keyfile, cacertfile;
  bool verify_peer = true;  // client: verify the server (on unless explicitly off)
  std::string server_name;  // client: SNI and the name checked (default: the host)
  bool operator==(const TlsFiles&) const = default;
};

// QUIC transport settings with NanoMQ's names (0 = off where that makes sense).
struct QuicSettings {
  uint64_t idle_timeout_ns = 120'000'000'000;       // quic_idle_timeout
  uint64_t keepalive_ns = 0;                        // quic_keepalive (QUIC PINGs)
  uint64_t handshake_timeout_ns = 20'000'000'000;   // quic_handshake_timeout
  uint64_t disconnect_timeout_ns = 20'000'000'000;  // quic_discon_timeout
  uint64_t initial_rtt_ns = 800'000'000;            // quic_initial_rtt_ms
  uint64_t max_ack_delay_ns = 100'000'000;          // quic_max_ack_delay_ms
  std::string congestion_control = "cubic";         // quic_congestion_control
  uint64_t max_peer_bidi_streams = 10;              // streams a client may have open
  bool operator==(const QuicSettings&) const = default;
};

struct QuicListenerSettings {
  std::string ip = "0.0.0.0";
  uint16_t port = 14567;
  TlsFiles tls;  // server certificate; verify_peer + cacertfile: mTLS
  QuicSettings quic;
  std::string retry = "under_load";  // off | always | under_load
  size_t max_connections = 10'000;
  bool operator==(const QuicListenerSettings&) const = default;
};

struct BridgeDialSettings {
  std::string name;  // the bridge's (bridges.mqtt.NAME): its store directory's name
  std::string ip;  // the upstream's address (a literal; names are resolved by the caller)
  uint16_t port = 14567;
  TlsFiles tls;
  QuicSettings quic;
  int data_streams = 1;
  std::vector<int> priorities;  // per data stream, lower first
  bool zero_rtt = true;         // quic_0rtt: resume with 0-RTT when a ticket is held
  uint16_t worker = 0;
  int proto_ver = 5;            // 3, 4 or 5: how PUBLISH and its acks are encoded
  size_t max_queue = 10'000;    // max_send_queue_len: QoS 1 messages held for the upstream
  bool tcp = false;             // mqtt-tcp:// (no QUIC settings)
  bool tls_tcp = false;         // with tcp: tls+mqtt-tcp:// (TLS over TCP, `tls` applies)
  // qos0_backpressure: QoS 0 faster than the uplink slows its south publishers down (TCP:
  // not read; QUIC: stream credit withheld) rather than being dropped when the slot is full.
  bool qos0_backpressure = true;
  // Store-and-forward (docs/store.md): QoS 1/2 for this bridge is acknowledged to its
  // publisher once committed to the bridge's custody log under [store] dir, and kept there
  // until the upstream acknowledges it.
  bool store = false;
  uint64_t store_max_bytes = 1ull << 30;     // beyond either cap: QoS 1 refused (0x97), QoS 0 dropped
  uint64_t store_max_messages = 1'000'000;
  bool store_qos0 = false;                   // QoS 0 is stored too while the bridge is down or behind
  uint64_t store_memory = 64ull << 20;       // stored bytes kept in memory; the rest is read back
  // hybrid_servers: more upstreams to fall back to, in turn (same TLS and QUIC settings).
  struct Hybrid {
    std::string ip;
    uint16_t port = 0;
    bool tcp = false;
    bool tls = false;  // with tcp: tls+mqtt-tcp://
    std::string server_name;
    bool operator==(const Hybrid&) const = default;
  };
  std::vector<Hybrid> hybrid;
  bool operator==(const BridgeDialSettings&) const = default;
};

struct RuntimeConfig {
  std::string backend = "socket";  // socket | dpdk
  int workers = 1;
  // socket backend: where QUIC bridges dial from (an ephemeral port per worker). Empty: an
  // IPv4 and an IPv6 wildcard socket per worker, each dialling from the source address the
  // kernel picks towards the upstream; an address: that one only.
  std::string local_ip;
  std::optional<QuicListenerSettings> listener;
  // MQTT over TCP on kernel sockets ([listeners.tcp]), accepted by every worker.
  struct TcpListener {
    std::string ip = "0.0.0.0";
    uint16_t port = 1883;
    bool operator==(const TcpListener&) const = default;
  };
  std::optional<TcpListener> tcp_listener;
  // MQTT over TLS on kernel TCP sockets ([listeners.ssl]), accepted by every worker.
  struct TlsListener {
    std::string ip = "0.0.0.0";
    uint16_t port = 8883;
    TlsFiles tls;  // verify_peer: client certificates checked against cacertfile
    bool fail_if_no_peer_cert = false;  // with verify_peer: a client without one is refused
    bool operator==(const TlsListener&) const = default;
  };
  std::optional<TlsListener> tls_listener;
  std::vector<BridgeDialSettings> bridges;
  // [store]: where store-and-forward bridges keep their custody logs (one directory per
  // bridge, named after it) and how they commit.
  struct Store {
    std::string dir;
    std::string fsync = "batch";  // batch | always | off
    uint64_t commit_delay_ns = 1'000'000;
    uint64_t segment_bytes = 64ull << 20;
    bool operator==(const Store&) const = default;
  };
  Store store;
  std::vector<int> worker_cpus;  // pin worker i to CPU worker_cpus[i] (empty: not pinned)
  uint32_t idle_sleep_us = 50;   // nap when an iteration found nothing to do (0: spin)
  size_t max_mqueue_len = 2048;  // [mqtt] max_mqueue_len: deliveries waiting per client
  // dpdk backend: one port, one RX/TX queue pair per worker
  std::vector<std::string> eal_args;  // argv for rte_eal_init (argv[0] included)
  uint16_t port_id = 0;
  std::string address;   // our IPv4 on the port, "a.b.c.d/len"
  std::string gateway;   // default route ("" none)
  std::string address6;  // our IPv6 on the port, "2001:db8::2/64" ("" no IPv6 on the port)
  std::string gateway6;  // IPv6 default router ("" none)
  uint16_t rx_desc = 1024;  // descriptors per queue
  uint16_t tx_desc = 1024;
  unsigned mbufs = 8191;    // per queue (each worker's queue has its own pool)
  bool checksum_offload = true;  // IPv4/UDP checksums by the NIC where the PMD offers them
};

class Runtime {
 public:
  // Creates the workers and starts their threads. The rings and activity tables (one per
  // worker) are the controlplane's link to them and must outlive the runtime.
  static absl::StatusOr<std::unique_ptr<Runtime>> Start(const RuntimeConfig& config,
                                                        RingMesh* rings,
                                                        std::vector<ActivityTable*> activity);
  virtual ~Runtime() = default;
  // Stops the worker threads (idempotent).
  virtual void Stop() = 0;
  virtual size_t workers() const = 0;
  // Per-core counters (single writer each: read them as estimates while running).
  virtual const WorkerStats& stats(size_t worker) const = 0;
  // The south QUIC listener's UDP port (the bound one when 0 was asked for).
  virtual uint16_t quic_port() const = 0;
  virtual uint16_t tcp_port() const = 0;
  virtual uint16_t tls_port() const = 0;  // [listeners.ssl]'s (the bound one when 0 was asked)
  virtual BridgeTrafficTotals BridgeTraffic(size_t bridge) const = 0;
  // A bridge added while running (a reload): its TLS contexts and, per worker, where it
  // dials from. Returns one opaque handle per worker, for the controlplane's kAddBridge
  // message to that worker (which takes it over). The bridge gets the next index.
  virtual absl::StatusOr<std::vector<uint64_t>> PrepareBridge(const BridgeDialSettings& settings) = 0;
  // Backend counters as name -> value (socket: rx/tx calls; dpdk: port counters and drops).
  virtual std::vector<std::pair<std::string, uint64_t>> BackendCounters() const = 0;
};

}  // namespace qbridge::dp
