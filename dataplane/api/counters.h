// Per-core counters: each block has exactly one writer (its core), so an increment is a
// relaxed load and store with no locked instruction; other cores (the controlplane, REST)
// read with relaxed loads and may see a value a few increments old, never a torn one.
#pragma once

#include <atomic>
#include <cstdint>

namespace qbridge::dp {

class Counter {
 public:
  void Inc(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void Set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
  void Max(uint64_t n) {
    if (n > v_.load(std::memory_order_relaxed)) v_.store(n, std::memory_order_relaxed);
  }
  uint64_t Get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// What every worker core counts. One list generates the fields, the names REST and
// Prometheus publish, and the accessors tests use.
#define QBRIDGE_WORKER_COUNTERS(X)                                                      \
  X(loops)               /* poll-loop iterations */                                     \
  X(busy_loops)          /* iterations that received, drained or wrote something */     \
  X(max_loop_ns)         /* longest busy iteration */                                   \
  X(rx_datagrams) X(rx_bytes) X(tx_datagrams) X(tx_bytes)                              \
  X(cid_forwarded)       /* datagrams for another core's CID, sent over its ring */     \
  X(cid_received)        /* datagrams other cores forwarded here */                     \
  X(drop_ring_full)      /* a message or datagram refused by a full ring */             \
  X(ring_in_hwm)         /* most messages seen waiting in one inbound ring */           \
  X(ring_heap_blocks)    /* bytes for another core that needed a heap block (pool out) */\
  X(drop_no_conn)        /* a forwarded datagram whose connection is gone */            \
  X(conns_opened) X(conns_closed)                                                       \
  X(tls_handshakes)      /* TLS-over-TCP handshakes completed (listener and bridges) */ \
  X(tls_handshake_failures) /* ... failed: bad certificate, alert, garbage (logged 5/s) */ \
  X(mqtt_packets_in) X(mqtt_packets_out)                                                \
  X(control_to_cp)       /* control packets handed to the controlplane */               \
  X(control_from_cp)     /* control packets the controlplane asked us to write */       \
  X(publish_in) X(publish_out) X(publish_bytes_in) X(publish_bytes_out)                  \
  X(drop_mqtt_malformed) /* streams closed for a framing or decode error */             \
  X(drop_mqtt_oversize)  /* packets over the maximum packet size */                     \
  X(drop_not_activated)  /* data-stream bytes beyond the pre-CONNACK buffer */          \
  X(drop_bad_stream)     /* packets not allowed on the stream they came on */           \
  X(drop_stale_conn)     /* controlplane messages for a connection already gone */     \
  X(drop_connect_timeout) /* south connections closed for sending no CONNECT */         \
  X(routed_south)        /* PUBLISHes delivered to south subscribers */                 \
  X(routed_north)        /* PUBLISHes forwarded to bridges */                           \
  X(routed_cross_core)   /* ... of which through another core's ring */                 \
  X(drop_no_route)       /* PUBLISHes no route matched */                               \
  X(drop_route_failed)   /* a matched route that could not take it (bridge down, ...) */ \
  X(drop_client_queue_full) /* deliveries beyond a client's window and max_mqueue_len */ \
  X(south_held_back)     /* publishers held back for a crowded bridge (qos0_backpressure) */ \
  X(routed_offline)      /* QoS 1/2 PUBLISHes sent to the controlplane for offline sessions */ \
  X(routed_shared)       /* PUBLISHes given to one member of a $share group */           \
  X(shared_redelivered)  /* ... unacknowledged by a member that left: to another member */ \
  X(drop_shared_no_member) /* ... with no member left that could take it */             \
  X(drop_offline_busy)   /* ... not sent: the controlplane's backlog from this core was full */ \
  X(snapshots)           /* routing snapshots installed */                              \
  X(north_0rtt_dials)    /* bridge dials that sent CONNECT as 0-RTT early data */       \
  X(north_0rtt_accepted) /* ... whose early data the upstream accepted */

struct alignas(64) WorkerStats {
#define QBRIDGE_X(name) Counter name;
  QBRIDGE_WORKER_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X

  template <typename Fn>  // fn(const char* name, uint64_t value)
  void ForEach(Fn&& fn) const {
#define QBRIDGE_X(name) fn(#name, name.Get());
    QBRIDGE_WORKER_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X
  }
};

// Why a message for a bridge was not delivered to its upstream.
#define QBRIDGE_BRIDGE_DROPS(X)                                                            \
  X(bridge_down)   /* QoS 0 while the bridge is not connected (QoS 1 waits instead) */     \
  X(queue_full)    /* QoS 1 beyond max_send_queue_len; QoS 0 beyond the slot's bound */    \
  X(refused)       /* the upstream's PUBACK carried a failure reason */                    \
  X(not_encodable) /* too large or invalid for the bridge's MQTT version */               \
  X(removed)       /* held for, or sent to, a bridge a reload removed */                   \
  X(store_full)    /* refused (QoS 1: PUBACK 0x97) or dropped (QoS 0): store at its cap */ \
  X(store_lost)    /* could not be read back from the custody log (I/O error, checksum) */

// A store-and-forward bridge's custody log (docs/store.md), as its worker sees it:
// X(name, Prometheus type, help). Gauges are set by the bridge's own worker only.
#define QBRIDGE_BRIDGE_STORE(X)                                                                   \
  X(store_messages, gauge, "Messages in the custody log the upstream has not acknowledged.")    \
  X(store_bytes, gauge, "Bytes of those messages.")                                            \
  X(store_oldest_age_ms, gauge, "Age of the oldest message in the custody log, in ms.")         \
  X(store_segments, gauge, "Segment files of the custody log.")                                \
  X(store_memory_bytes, gauge, "Bytes of queued stored messages held in memory (store_memory); in-flight ones come on top.") \
  X(store_append_rate, gauge, "Messages per second appended over the last second.")            \
  X(store_drain_rate, gauge, "Messages per second released over the last second.")             \
  X(store_appended, counter, "Messages appended to the custody log.")                          \
  X(store_drained, counter, "Messages released from the log after the upstream's ack.")       \
  X(store_commits, counter, "Group commits, failed ones included (one write each; one fdatasync each for those carrying messages).") \
  X(store_written_bytes, counter, "Bytes written to the custody log's segments.")              \
  X(store_commit_p50_us, gauge, "Median commit latency (append to durable), in us.")            \
  X(store_commit_p99_us, gauge, "99th percentile commit latency, in us.")                       \
  X(store_recovered, counter, "Messages recovered from the log at start-up.")                  \
  X(store_truncated_bytes, counter, "Torn or corrupted bytes cut from the log at recovery.")   \
  X(store_io_errors, counter, "Failed writes or syncs (their messages fall back to memory).")

// Traffic of one north bridge as one worker saw it (the bridge's own worker, and others
// that counted drops for it).
struct alignas(64) BridgeTraffic {
  Counter tx_msgs, tx_bytes, rx_msgs, rx_bytes;
  Counter resent;  // PUBLISHes sent again with DUP (after a reconnect, or recovered from the store)
#define QBRIDGE_X(name) Counter drop_##name;
  QBRIDGE_BRIDGE_DROPS(QBRIDGE_X)
#undef QBRIDGE_X
  // Gauges of the QUIC path, set by the bridge's own worker while connected (0 otherwise).
  Counter srtt_ns, min_rtt_ns, cwnd_bytes, bytes_in_flight;
  // QoS 1/2 PUBLISHes sent and not yet acknowledged, and PUBLISHes waiting to be sent (for
  // the connection, a packet id, or the upstream's Receive Maximum; stored QoS 0 ones too);
  // set by the bridge's own worker every 100 ms.
  Counter inflight, queued;
  // South connections held back for it now (qos0_backpressure), set likewise.
  Counter held_back;
#define QBRIDGE_X(name, type, help) Counter name;
  QBRIDGE_BRIDGE_STORE(QBRIDGE_X)
#undef QBRIDGE_X
};

// The same, summed and copied out.
struct BridgeTrafficTotals {
  uint64_t tx_msgs = 0, tx_bytes = 0, rx_msgs = 0, rx_bytes = 0, resent = 0;
#define QBRIDGE_X(name) uint64_t drop_##name = 0;
  QBRIDGE_BRIDGE_DROPS(QBRIDGE_X)
#undef QBRIDGE_X
  uint64_t srtt_ns = 0, min_rtt_ns = 0, cwnd_bytes = 0, bytes_in_flight = 0;
  uint64_t inflight = 0, queued = 0, held_back = 0;
#define QBRIDGE_X(name, type, help) uint64_t name = 0;
  QBRIDGE_BRIDGE_STORE(QBRIDGE_X)
#undef QBRIDGE_X
  uint64_t drops() const {
    uint64_t n = 0;
#define QBRIDGE_X(name) n += drop_##name;
    QBRIDGE_BRIDGE_DROPS(QBRIDGE_X)
#undef QBRIDGE_X
    return n;
  }
};

}  // namespace qbridge::dp
