// The server side of QUIC: one endpoint per worker (or per socket), demultiplexing
// datagrams to connections by DCID, accepting new ones, and answering what no connection
// owns: Version Negotiation, Retry (address validation with encrypted, expiring tokens)
// and stateless resets. Every drop is counted by reason; nothing here crashes on input.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "quic/connection.h"
#include "quic/deadline_heap.h"
#include "quic/tls.h"

namespace qbridge::quic {

enum class RetryMode : uint8_t {
  kOff,       // never send Retry
  kAlways,    // every new client proves its address first
  kUnderLoad, // Retry once handshakes in flight reach retry_threshold, or new handshakes
              // in the current second reach retry_rate
};

struct EndpointConfig {
  TransportConfig transport;
  uint16_t owner_id = 0;             // encoded in every server CID (the worker core)
  size_t max_connections = 10'000;
  size_t max_handshakes = 1'000;     // connections not yet established
  RetryMode retry = RetryMode::kUnderLoad;
  size_t retry_threshold = 100;
  // New handshakes per second above which clients must prove their address first. About
  // half of one core's capacity (~1,000 full handshakes/s, docs/benchmarks.md).
  size_t retry_rate = 500;
  uint64_t retry_token_lifetime_ns = 10 * kSecond;
  // Key for Retry tokens and stateless reset tokens; random when empty. Endpoints that
  // must recognise each other's tokens (several workers, several boxes) share it.
  std::vector<uint8_t> secret;
};

#define QBRIDGE_QUIC_ENDPOINT_COUNTERS(X) \
  X(datagrams_in)                         \
  X(accepted)                             \
  X(closed)                               \
  X(version_negotiation_sent)             \
  X(retry_sent)                           \
  X(stateless_reset_sent)                 \
  X(drop_bad_header)                      \
  X(drop_not_initial)                     \
  X(drop_connection_limit)                \
  X(drop_handshake_limit)                 \
  X(drop_bad_token)                       \
  X(drop_accept_failed)                   \
  X(drop_short_unknown)                   \
  X(drop_short_foreign)

struct EndpointStats {
#define QBRIDGE_X(name) uint64_t name = 0;
  QBRIDGE_QUIC_ENDPOINT_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X
};

class ServerEndpoint : public CidRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<ServerEndpoint>> Create(const TlsContext& tls,
                                                                EndpointConfig config);
  ~ServerEndpoint() override;

  // Called for each new connection before its first packet is read; returns the
  // connection's event sink (may be null).
  using AcceptFn = std::function<ConnectionEvents*(Connection&)>;
  void set_on_accept(AcceptFn fn) { on_accept_ = std::move(fn); }
  // Called when a connection is reaped (closed, drained, timed out). Destroying the
  // endpoint destroys its connections without calling it.
  using CloseFn = std::function<void(Connection&)>;
  void set_on_close(CloseFn fn) { on_close_ = std::move(fn); }

  // One received datagram. Replies that belong to no connection go out through `emit`.
  void Receive(const Path& path, std::span<const uint8_t> datagram, Timestamp now,
               Connection::Emit emit);
  // Writes the pending datagrams of every connection that wants to write (want_write():
  // idle connections are not visited).
  size_t WriteAll(Timestamp now, std::span<uint8_t> scratch, size_t max_per_conn,
                  Connection::Emit emit);
  // The earliest connection deadline, from a heap the endpoint refreshes after each read,
  // write and timer of a connection (O(1), no call into ngtcp2).
  Timestamp Expiry() const;
  // Runs due timers and reaps finished connections.
  void HandleExpiry(Timestamp now);

  size_t connections() const { return conns_.size(); }
  size_t connections_wanting_write() const { return dirty_.size(); }
  const EndpointStats& stats() const { return stats_; }
  // Handshakes in flight, what max_handshakes and retry_threshold compare with: a counter the
  // connections keep (CountHandshakeIn), not a scan (an Initial flood costs O(1) each).
  size_t handshakes() const { return handshaking_; }
  // For tests and REST: the connection a CID routes to, or null.
  Connection* Find(const uint8_t* cid, size_t len) const;
  template <typename Fn>
  void ForEachConnection(Fn&& fn) {
    for (auto& [c, e] : conns_) fn(*c);
  }

  // CidRegistry
  void AddCid(const ngtcp2_cid& cid, Connection* conn) override;
  void RemoveCid(const ngtcp2_cid& cid) override;
  void OnWantWrite(Connection* conn) override { dirty_.push_back(conn); }

 private:
  using Emit = Connection::Emit;
  ServerEndpoint(const TlsContext& tls, EndpointConfig config);
  void SendVersionNegotiation(const Path& path, const ngtcp2_version_cid& vc, Emit emit);
  void SendRetry(const Path& path, const ngtcp2_pkt_hd& hd, Timestamp now, Connection::Emit emit);
  void SendStatelessReset(const Path& path, const uint8_t* dcid, size_t dcidlen, size_t pktlen,
                          Connection::Emit emit);
  bool RetryRequired(Timestamp now);
  size_t Handshakes() const { return handshaking_; }
  void Reap(Connection* c);
  // Refreshes `c`'s deadline in the heap (0 once it is closed: reap it).
  void Track(Connection* c) {
    expiry_.Set(c->endpoint_slot(), c->state() == Connection::State::kClosed ? 0 : c->Expiry());
  }

  struct Entry {
    std::unique_ptr<Connection> conn;
    absl::flat_hash_set<std::string> cids;  // those still routed to it
  };

  const TlsContext& tls_;
  EndpointConfig config_;
  AcceptFn on_accept_;
  CloseFn on_close_;
  absl::flat_hash_map<std::string, Connection*> by_cid_;
  // Connections in their handshake (each decrements it as it leaves that state). Declared
  // before conns_, so it outlives the connections destroyed with the endpoint.
  size_t handshaking_ = 0;
  absl::flat_hash_map<Connection*, Entry> conns_;
  // Per slot (Connection::endpoint_slot()): the connection, and its deadline in a heap
  // (absent when the slot is free).
  std::vector<Connection*> slot_conn_;
  DeadlineHeap expiry_;
  std::vector<uint32_t> due_;  // HandleExpiry's scratch: the slots due now
  std::vector<uint32_t> free_slots_;
  std::vector<Connection*> dirty_, writing_;  // wanting to write; each once
  EndpointStats stats_;
  std::array<uint8_t, 1500> reply_{};
  Timestamp rate_window_start_ = 0;  // one-second window of accepted handshakes
  size_t rate_window_count_ = 0;
};

}  // namespace qbridge::quic
