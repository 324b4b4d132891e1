// A QUIC connection (client or server) over ngtcp2 1.11 + GnuTLS, I/O-agnostic: datagrams
// in with a path and a timestamp, datagrams out into caller buffers, the next deadline as
// a number. No sockets, no threads, no clock reads: the owner's poll loop drives it.
//
// Streams: bidirectional, client-initiated (the EMQX wire model). The write scheduler
// serves the control stream (stream 0) first in every round, then data streams by
// priority (lower first; round-robin within a priority). Stream bytes are kept referenced
// until the peer acknowledges them (ngtcp2 retransmits from them), never copied.
#pragma once

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sys/socket.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "quic/buffer.h"
#include "quic/fifo.h"
#include "quic/mem_pool.h"
#include "quic/tls.h"

namespace qbridge::quic {

// Nanoseconds on the caller's monotonic clock; the same unit as ngtcp2_tstamp.
using Timestamp = uint64_t;
inline constexpr Timestamp kNever = UINT64_MAX;
inline constexpr uint64_t kMillisecond = 1'000'000;
inline constexpr uint64_t kSecond = 1'000'000'000;

struct Address {
  sockaddr_storage storage{};
  socklen_t len = 0;

  // An IPv4 or IPv6 literal and a port; an empty Address when `ip` does not parse.
  static Address FromIpPort(std::string_view ip, uint16_t port);
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
  sockaddr* sa() { return reinterpret_cast<sockaddr*>(&storage); }
  bool empty() const { return len == 0; }
  std::string ToString() const;
  bool operator==(const Address& o) const;
};

struct Path {
  Address local;
  Address remote;
};

enum class CcAlgo : uint8_t { kCubic, kBbr, kReno };

// Transport settings, named after NanoMQ's bridge keys where NanoMQ has one.
struct TransportConfig {
  uint64_t idle_timeout_ns = 120 * kSecond;      // quic_idle_timeout
  uint64_t keepalive_ns = 0;                     // quic_keepalive (QUIC PINGs); 0 = off
  uint64_t handshake_timeout_ns = 10 * kSecond;  // quic_handshake_timeout
  uint64_t initial_rtt_ns = 333 * kMillisecond;  // quic_initial_rtt_ms
  uint64_t max_ack_delay_ns = 25 * kMillisecond; // quic_max_ack_delay_ms
  // quic_discon_timeout (msquic's DisconnectTimeout): with packets in flight and nothing
  // acknowledged for this long, the path is dead and the connection is dropped, long
  // before the idle timeout would notice. 0 = off.
  uint64_t disconnect_timeout_ns = 16 * kSecond;
  CcAlgo cc = CcAlgo::kCubic;
  // Bidirectional streams the peer may have open at once. EMQX allows 10; a client needs
  // none (servers never open streams in the EMQX model).
  uint64_t max_peer_bidi_streams = 10;
  uint64_t stream_window = 1 << 20;        // initial per-stream receive window
  uint64_t connection_window = 4 << 20;    // initial connection receive window
  uint64_t max_stream_window = 8 << 20;    // auto-tuning caps
  uint64_t max_connection_window = 32 << 20;
  size_t max_udp_payload = 1452;           // largest datagram we send (PMTUD probes up to it)
  // When set, receive credit is returned only by Consume(); otherwise as data is delivered.
  bool manual_flow_control = false;
  // Client: an address-validation token to present in the Initial (from NEW_TOKEN).
  std::vector<uint8_t> token;
};

// What the connection tells its owner. Called synchronously from Read/HandleExpiry.
class ConnectionEvents {
 public:
  virtual ~ConnectionEvents() = default;
  virtual void OnHandshakeConfirmed() {}
  // Stream bytes in order; `data` is valid only during the call.
  virtual void OnStreamData(int64_t stream_id, std::span<const uint8_t> data, bool fin) = 0;
  virtual void OnStreamReset(int64_t /*stream_id*/, uint64_t /*app_error*/) {}
  virtual void OnStreamStopSending(int64_t /*stream_id*/, uint64_t /*app_error*/) {}
  virtual void OnStreamClosed(int64_t /*stream_id*/, uint64_t /*app_error*/) {}
  // The peer raised our stream credit: OpenStream may succeed again.
  virtual void OnStreamCredit() {}
  // Early data was rejected by the server: what was sent in 0-RTT must be sent again.
  virtual void OnEarlyDataRejected() {}
};

// Server endpoints learn of connection IDs a connection issues and retires.
class CidRegistry {
 public:
  virtual ~CidRegistry() = default;
  virtual void AddCid(const ngtcp2_cid& cid, class Connection* conn) = 0;
  virtual void RemoveCid(const ngtcp2_cid& cid) = 0;
  // The connection has something to write again (want_write() turned true).
  virtual void OnWantWrite(class Connection* /*conn*/) {}
};

// Server-side identity a connection needs: how to mint CIDs and stateless reset tokens.
struct ServerCidConfig {
  uint16_t owner_id = 0;             // encoded in every CID we issue
  std::span<const uint8_t> secret;   // stateless reset token key (>= 32 bytes)
};

inline constexpr size_t kServerCidLen = 16;
inline constexpr size_t kClientCidLen = 16;  // the CIDs a client connection issues

// Mints a server CID: byte 0 reserved (QUIC-LB config rotation, 0), bytes 1-2 the owner
// id (big-endian), the rest random.
void MakeServerCid(uint16_t owner_id, ngtcp2_cid* cid);
uint16_t CidOwner(const uint8_t* cid, size_t len);

// Fills `dest` with cryptographically random bytes (GnuTLS nonce RNG).
void RandomBytes(uint8_t* dest, size_t len);

// What a client keeps from one connection to resume the next with 0-RTT: the TLS session
// ticket and the server's transport parameters that bound early data.
struct ResumptionTicket {
  std::vector<uint8_t> tls_session;
  std::vector<uint8_t> transport_params;
};

class Connection {
 public:
  enum class State : uint8_t { kHandshaking, kEstablished, kClosing, kDraining, kClosed };

  // A client connection to `path.remote`. Nothing is sent until the first Write.
  // With a ticket from an earlier connection the handshake resumes, and streams opened
  // and written before it completes go out as 0-RTT early data.
  static absl::StatusOr<std::unique_ptr<Connection>> Connect(
      const TlsContext& tls, const TransportConfig& config, const Path& path,
      ConnectionEvents* events, Timestamp now, const ResumptionTicket* ticket = nullptr);

  // A server connection for an Initial accepted by an endpoint. `odcid` is the client's
  // original DCID (from the Retry token when a Retry was sent), `retry_scid` is set when
  // the Initial answered a Retry.
  static absl::StatusOr<std::unique_ptr<Connection>> Accept(
      const TlsContext& tls, const TransportConfig& config, const ServerCidConfig& cids,
      CidRegistry* registry, const Path& path, const ngtcp2_pkt_hd& hd, const ngtcp2_cid& odcid,
      const ngtcp2_cid* retry_scid, ConnectionEvents* events, Timestamp now);

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void set_events(ConnectionEvents* events) { events_ = events; }
  // Server connections report the CIDs they issue and retire to their endpoint.
  void SetRegistry(CidRegistry* registry) { registry_ = registry; }

  // --- input ---------------------------------------------------------------------------------
  // Feeds one received datagram. A connection that returns false is finished (closed by
  // the peer, fatally broken, or already closed): the owner stops using it once it has
  // written what Write still produces (a CONNECTION_CLOSE).
  bool Read(const Path& path, std::span<const uint8_t> datagram, Timestamp now);

  // --- timers --------------------------------------------------------------------------------
  Timestamp Expiry() const;
  // Handles timers due at `now`; false when the connection timed out (idle or handshake).
  bool HandleExpiry(Timestamp now);

  // --- output --------------------------------------------------------------------------------
  // Called by Write with datagrams laid back to back: every one `segment` bytes long except
  // possibly the last (UDP GSO semantics; one sendmsg or one TX burst each).
  using Emit = absl::FunctionRef<void(const Path& path, std::span<const uint8_t> datagrams,
                                      size_t segment)>;
  // Writes what is due, at most `max_datagrams` per call (bounded by the pacer's send
  // quantum). `scratch` must hold max_datagrams * config.max_udp_payload bytes. Returns
  // the number of datagrams emitted.
  size_t Write(Timestamp now, std::span<uint8_t> scratch, size_t max_datagrams, Emit emit);

  // --- streams -------------------------------------------------------------------------------
  // Opens a client bidirectional stream; fails (Unavailable) without peer credit.
  absl::StatusOr<int64_t> OpenStream(int priority = 0);
  // Queues bytes on a stream (kept referenced until acknowledged); `fin` ends it.
  absl::Status Send(int64_t stream_id, Buffer data, bool fin = false);
  // Queues `n` bytes that `fill` writes (false: it could not, and nothing is queued). They
  // go into the buffer at the stream's tail when nothing else holds it, it is not wholly
  // sent yet and has room, so small packets nobody keeps a copy of (QoS 0, acks) share one
  // buffer, one queue entry and one iovec; otherwise into a new buffer from `pool` with
  // room for more (kAppendBlockBytes at least).
  static constexpr size_t kAppendBlockBytes = 4096;
  absl::Status Append(int64_t stream_id, size_t n, BufferPool& pool,
                      absl::FunctionRef<bool(std::span<uint8_t>)> fill);
  absl::Status SendFin(int64_t stream_id) { return Send(stream_id, nullptr, true); }
  // Sets a stream's priority (lower is served first; the control stream always first).
  void SetPriority(int64_t stream_id, int priority);
  // RESET_STREAM and STOP_SENDING with an application error code.
  void ResetStream(int64_t stream_id, uint64_t app_error);
  // Returns receive credit for `bytes` consumed (manual_flow_control only).
  void Consume(int64_t stream_id, uint64_t bytes);
  // Back-pressure on one stream (automatic flow control): while held, what the peer sends
  // on it is delivered but its stream credit is not returned, so it can send at most the
  // window it already has; the connection's credit still is, so its other streams flow.
  // HoldCredit is false when the stream was held already; ReleaseCredit returns what was
  // withheld.
  bool HoldCredit(int64_t stream_id);
  void ReleaseCredit(int64_t stream_id);
  bool CreditHeld(int64_t stream_id) const;
  // Unsent plus unacknowledged bytes held for a stream, and bytes handed to the wire.
  uint64_t BufferedBytes(int64_t stream_id) const;
  uint64_t SentBytes(int64_t stream_id) const;
  uint64_t UnsentBytes(int64_t stream_id) const;  // queued, not yet handed to the wire
  // What the congestion controller and RTT estimator know of the path now.
  struct PathInfo {
    uint64_t smoothed_rtt_ns = 0, min_rtt_ns = 0, latest_rtt_ns = 0;
    uint64_t cwnd_bytes = 0, bytes_in_flight = 0;
  };
  PathInfo path_info() const;
  // Whether `cid` is one of the connection IDs we issued that the peer may use now (for
  // telling apart connections that share one 4-tuple).
  bool HasScid(std::span<const uint8_t> cid) const;
  uint64_t StreamCredit() const;  // bidirectional streams we may still open

  // Client: moves to a new local address at once (RFC 9000 9.2); the server validates
  // the new path.
  absl::Status MigrateTo(const Address& local, Timestamp now);
  // Starts a key update (RFC 9001 6).
  absl::Status UpdateKeys(Timestamp now);

  // Starts closing: the next Write sends CONNECTION_CLOSE with this application error.
  void Close(uint64_t app_error, std::string_view reason = {});

  // --- resumption and 0-RTT ------------------------------------------------------------------
  // Client: the newest ticket the server sent (after the handshake), if any.
  const std::optional<ResumptionTicket>& ticket() const { return ticket_; }
  // Client: whether this connection may send early data (a usable ticket was given).
  bool early_data_possible() const { return early_data_possible_; }
  // Both sides, after the handshake: the server accepted early data. A client whose early
  // data was rejected got OnEarlyDataRejected and must send that data again.
  bool early_data_accepted() const;
  bool early_data_rejected() const { return early_data_rejected_; }
  bool resumed() const;
  // Whether the TLS session is still held (a server frees it after the handshake).
  bool holds_tls() const { return tls_ != nullptr; }

  // Whether a Write may have something to send: set by whatever can give it work (a
  // datagram read, a timer handled, stream data or a reset queued, credit returned, a close
  // asked for), cleared by a Write that ran out of things ngtcp2 would send now (what waits
  // on pacing shows in Expiry(), what waits on the peer's acks or credit comes with a Read).
  // A server endpoint writes only connections that want to.
  bool want_write() const { return want_write_; }
  // A server endpoint's index for this connection (its timer table).
  uint32_t endpoint_slot() const { return endpoint_slot_; }
  void set_endpoint_slot(uint32_t slot) { endpoint_slot_ = slot; }

  // --- state ---------------------------------------------------------------------------------
  State state() const { return state_; }
  // Counts this connection in `*counter` while it handshakes: the counter is decremented
  // when it leaves kHandshaking (or is destroyed in it). The owner increments it (an
  // endpoint's count of handshakes in flight, kept without a scan). Null: none.
  void CountHandshakeIn(size_t* counter) { handshaking_ = counter; }
  bool is_server() const { return server_; }
  bool handshake_confirmed() const { return state_ == State::kEstablished; }
  const Path& path() const { return path_; }
  std::string alpn() const;
  // TLS alert of a failed handshake (0 if none), and the peer's close error if it closed.
  uint8_t tls_alert() const;
  uint64_t peer_app_error() const { return peer_app_error_; }
  // Why a connection ended on its own: "" (still open or closed by a peer or the owner),
  // "idle timeout", "handshake timeout" or "disconnect timeout".
  const char* timeout_reason() const { return timeout_reason_; }
  bool peer_closed() const { return peer_closed_; }
  ngtcp2_conn* raw() { return conn_; }

 private:
  struct Chunk {
    Buffer buf;
    size_t off;
    size_t len;
  };
  struct SendStream {
    int64_t id = 0;
    int priority = 0;
    uint64_t served = 0;      // scheduler round-robin stamp
    Fifo<Chunk> chunks;       // from the first unacknowledged byte
    uint64_t base = 0;        // stream offset of chunks.front()
    uint64_t sent = 0;        // stream offset handed to ngtcp2
    // The first chunk not wholly handed to ngtcp2 and its stream offset: writes start
    // there instead of walking every chunk still awaiting its ack.
    size_t unsent_idx = 0;
    uint64_t unsent_base = 0;
    uint64_t end = 0;         // stream offset after the last queued byte
    bool fin_queued = false;
    bool fin_sent = false;
    bool blocked = false;     // flow-control blocked in the current Write
  };

  Connection(bool server, ConnectionEvents* events);
  absl::Status InitTls(const TlsContext& tls);
  static void FillSettings(const TransportConfig& c, Timestamp now, ngtcp2_settings* s);
  static void FillParams(const TransportConfig& c, bool server, ngtcp2_transport_params* p);
  static ngtcp2_callbacks Callbacks(bool server);

  SendStream* PickStream();
  // Gathers up to `max` vecs of unsent bytes from `s`.
  size_t Gather(const SendStream& s, ngtcp2_vec* v, size_t max, uint64_t* total) const;
  void Advance(SendStream& s, uint64_t bytes);
  void OnAcked(int64_t stream_id, uint64_t offset, uint64_t len);
  bool WriteClose(Timestamp now, std::span<uint8_t> scratch, Emit emit);
  bool Fail(int liberr);  // sets the close error from an ngtcp2 error; returns false

  // ngtcp2 callbacks
  static int OnRecvStreamData(ngtcp2_conn*, uint32_t flags, int64_t sid, uint64_t offset,
                              const uint8_t* data, size_t len, void* user, void* stream_user);
  static int OnAckedStreamDataOffset(ngtcp2_conn*, int64_t sid, uint64_t offset, uint64_t len,
                                     void* user, void* stream_user);
  static int OnStreamClose(ngtcp2_conn*, uint32_t flags, int64_t sid, uint64_t app_error,
                           void* user, void* stream_user);
  static int OnStreamReset(ngtcp2_conn*, int64_t sid, uint64_t final_size, uint64_t app_error,
                           void* user, void* stream_user);
  static int OnStreamStopSending(ngtcp2_conn*, int64_t sid, uint64_t app_error, void* user,
                                 void* stream_user);
  static int OnHandshakeConfirmed(ngtcp2_conn*, void* user);
  static int OnHandshakeCompleted(ngtcp2_conn*, void* user);
  static int OnExtendMaxStreams(ngtcp2_conn*, uint64_t max_streams, void* user);
  static int OnGetNewConnectionId(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen,
                                  void* user);
  static int OnRemoveConnectionId(ngtcp2_conn*, const ngtcp2_cid* cid, void* user);
  static int OnEarlyDataRejected(ngtcp2_conn*, void* user);
  static int OnRecvCryptoData(ngtcp2_conn*, ngtcp2_encryption_level level, uint64_t offset,
                              const uint8_t* data, size_t datalen, void* user);
  // Server: frees the TLS session once the handshake is over (it sent its session tickets;
  // QUIC's key updates and retransmissions need only ngtcp2's own copies): about 12 KiB per
  // idle session. What was asked of the session later is kept first.
  void ReleaseTls();
  static void Rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*);
  static ngtcp2_conn* GetConn(ngtcp2_crypto_conn_ref* ref);
  static int OnNewSessionTicket(gnutls_session_t session, unsigned htype, unsigned when,
                                unsigned incoming, const gnutls_datum_t* msg);

  bool server_;
  ConnectionEvents* events_;
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  ngtcp2_crypto_conn_ref conn_ref_{};
  // Kept from the TLS session when a server releases it (ReleaseTls).
  std::string alpn_kept_;
  bool resumed_kept_ = false, early_data_kept_ = false;
  Path path_;
  State state_ = State::kHandshaking;
  size_t* handshaking_ = nullptr;  // CountHandshakeIn
  void SetState(State s) {
    if (state_ == State::kHandshaking && s != State::kHandshaking && handshaking_ != nullptr) --*handshaking_;
    state_ = s;
  }
  TransportConfig config_;
  ServerCidConfig cids_;
  CidRegistry* registry_ = nullptr;
  std::map<int64_t, SendStream> streams_;
  // The stream a Send or Append queues on (a peer-opened one is taken on here), or why not.
  absl::StatusOr<SendStream*> StreamToSend(int64_t stream_id);
  uint64_t serve_counter_ = 0;
  ngtcp2_ccerr close_error_{};
  bool close_requested_ = false;
  bool close_written_ = false;
  bool peer_closed_ = false;
  uint64_t peer_app_error_ = 0;
  std::vector<uint8_t> close_packet_;  // kept to resend while closing
  struct HeldCredit {
    int64_t stream_id;
    uint64_t owed;  // bytes delivered while held: the credit to return
  };
  std::vector<HeldCredit> held_credit_;  // few: the streams held back now
  Path close_path_;
  Timestamp close_deadline_ = 0;  // end of the closing or draining period
  std::optional<ResumptionTicket> ticket_;
  uint64_t bytes_in_flight_ = 0;
  Timestamp last_ack_progress_ = 0;  // when bytes in flight last fell (or were none)
  const char* timeout_reason_ = "";
  void TrackAckProgress(Timestamp now);
  bool early_data_possible_ = false;
  bool early_data_rejected_ = false;
  bool want_write_ = true;
  uint32_t endpoint_slot_ = UINT32_MAX;
  void WantWrite() {
    if (want_write_) return;
    want_write_ = true;
    if (registry_) registry_->OnWantWrite(this);
  }
};

}  // namespace qbridge::quic
