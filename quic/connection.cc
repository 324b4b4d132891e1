// A QUIC connection over ngtcp2 + GnuTLS, sans I/O: construction (client dial with an
// optional resumption ticket, server accept), input and timers, the connection-level
// queries and commands, and ngtcp2's callbacks (trampolines to members). The send side,
// streams and the write scheduler, is connection_write.cc; addresses and CIDs address.cc.
#include "quic/connection.h"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "quic/ng_path.h"

namespace qbridge::quic {

// --- construction ----------------------------------------------------------------------------

Connection::Connection(bool server, ConnectionEvents* events) : server_(server), events_(events) {
  ngtcp2_ccerr_default(&close_error_);
}

Connection::~Connection() {
  if (state_ == State::kHandshaking && handshaking_ != nullptr) --*handshaking_;
  if (conn_) ngtcp2_conn_del(conn_);
  if (tls_) gnutls_deinit(tls_);
}

ngtcp2_conn* Connection::GetConn(ngtcp2_crypto_conn_ref* ref) {
  return static_cast<Connection*>(ref->user_data)->conn_;
}

void Connection::Rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) { RandomBytes(dest, len); }

void Connection::FillSettings(const TransportConfig& c, Timestamp now, ngtcp2_settings* s) {
  ngtcp2_settings_default(s);
  s->initial_ts = now;
  s->initial_rtt = c.initial_rtt_ns;
  s->handshake_timeout = c.handshake_timeout_ns;
  s->max_tx_udp_payload_size = c.max_udp_payload;
  s->max_window = c.max_connection_window;
  s->max_stream_window = c.max_stream_window;
  s->cc_algo = c.cc == CcAlgo::kBbr    ? NGTCP2_CC_ALGO_BBR
               : c.cc == CcAlgo::kReno ? NGTCP2_CC_ALGO_RENO
                                       : NGTCP2_CC_ALGO_CUBIC;
}

void Connection::FillParams(const TransportConfig& c, bool server, ngtcp2_transport_params* p) {
  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = c.stream_window;
  p->initial_max_stream_data_bidi_remote = c.stream_window;
  p->initial_max_stream_data_uni = 0;
  p->initial_max_data = c.connection_window;
  // Only clients open streams in the EMQX model: a client grants the server none.
  p->initial_max_streams_bidi = server ? c.max_peer_bidi_streams : 0;
  p->initial_max_streams_uni = 0;
  p->max_idle_timeout = c.idle_timeout_ns;
  p->max_ack_delay = c.max_ack_delay_ns;
  p->active_connection_id_limit = 4;
}

ngtcp2_callbacks Connection::Callbacks(bool server) {
  ngtcp2_callbacks cb{};
  if (server) {
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb.recv_crypto_data = OnRecvCryptoData;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.recv_stream_data = OnRecvStreamData;
  cb.acked_stream_data_offset = OnAckedStreamDataOffset;
  cb.stream_close = OnStreamClose;
  cb.extend_max_local_streams_bidi = OnExtendMaxStreams;
  cb.rand = Rand;
  cb.get_new_connection_id = OnGetNewConnectionId;
  cb.remove_connection_id = OnRemoveConnectionId;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.stream_reset = OnStreamReset;
  cb.handshake_confirmed = OnHandshakeConfirmed;
  // A server's handshake is confirmed when it completes (RFC 9001 4.1.2); ngtcp2 reports
  // confirmation to clients only, so servers take completion.
  cb.handshake_completed = OnHandshakeCompleted;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.stream_stop_sending = OnStreamStopSending;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.tls_early_data_rejected = OnEarlyDataRejected;
  return cb;
}

absl::Status Connection::InitTls(const TlsContext& tls) {
  conn_ref_.get_conn = GetConn;
  conn_ref_.user_data = this;
  auto session = tls.NewSession(&conn_ref_);
  if (!session.ok()) return session.status();
  tls_ = *session;
  ngtcp2_conn_set_tls_native_handle(conn_, tls_);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Connect(
    const TlsContext& tls, const TransportConfig& config, const Path& path,
    ConnectionEvents* events, Timestamp now, const ResumptionTicket* ticket) {
  if (tls.side() != TlsContext::Side::kClient)
    return absl::InvalidArgumentError("quic: Connect needs a client TLS context");
  std::unique_ptr<Connection> c(new Connection(/*server=*/false, events));
  c->config_ = config;
  c->path_ = path;
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  RandomBytes(dcid.data, dcid.datalen);
  scid.datalen = kClientCidLen;
  RandomBytes(scid.data, scid.datalen);
  ngtcp2_settings settings;
  FillSettings(config, now, &settings);
  if (!config.token.empty()) {
    settings.token = config.token.data();
    settings.tokenlen = config.token.size();
  }
  ngtcp2_transport_params params;
  FillParams(config, false, &params);
  const ngtcp2_callbacks cb = Callbacks(false);
  const ngtcp2_path np = ToNgPath(c->path_);
  const int rv = ngtcp2_conn_client_new(&c->conn_, &dcid, &scid, &np, NGTCP2_PROTO_VER_V1, &cb,
                                        &settings, &params, NgMem(), c.get());
  if (rv != 0) return absl::InternalError(absl::StrCat("ngtcp2_conn_client_new: ", ngtcp2_strerror(rv)));
  if (auto s = c->InitTls(tls); !s.ok()) return s;
  gnutls_handshake_set_hook_function(c->tls_, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET,
                                     GNUTLS_HOOK_POST, OnNewSessionTicket);
  if (ticket && !ticket->tls_session.empty()) {
    // A stale or foreign ticket only costs the resumption: the handshake goes full.
    if (gnutls_session_set_data(c->tls_, ticket->tls_session.data(), ticket->tls_session.size()) == 0 &&
        ngtcp2_conn_decode_and_set_0rtt_transport_params(
            c->conn_, ticket->transport_params.data(), ticket->transport_params.size()) == 0) {
      c->early_data_possible_ = true;
    }
  }
  if (config.keepalive_ns) ngtcp2_conn_set_keep_alive_timeout(c->conn_, config.keepalive_ns);
  return c;
}

int Connection::OnNewSessionTicket(gnutls_session_t session, unsigned, unsigned, unsigned,
                                   const gnutls_datum_t*) {
  auto* ref = static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(session));
  auto* c = static_cast<Connection*>(ref->user_data);
  gnutls_datum_t data{};
  if (gnutls_session_get_data2(session, &data) != 0) return 0;
  ResumptionTicket t;
  t.tls_session.assign(data.data, data.data + data.size);
  gnutls_free(data.data);
  uint8_t params[256];
  const ngtcp2_ssize n = ngtcp2_conn_encode_0rtt_transport_params(c->conn_, params, sizeof(params));
  if (n > 0) t.transport_params.assign(params, params + n);
  c->ticket_ = std::move(t);
  return 0;
}

bool Connection::early_data_accepted() const {
  if (!tls_) return early_data_kept_;
  return (gnutls_session_get_flags(tls_) & GNUTLS_SFLAGS_EARLY_DATA) != 0;
}

bool Connection::resumed() const { return tls_ ? gnutls_session_is_resumed(tls_) != 0 : resumed_kept_; }

void Connection::ReleaseTls() {
  if (!tls_) return;
  alpn_kept_ = NegotiatedAlpn(tls_);
  resumed_kept_ = gnutls_session_is_resumed(tls_) != 0;
  early_data_kept_ = (gnutls_session_get_flags(tls_) & GNUTLS_SFLAGS_EARLY_DATA) != 0;
  ngtcp2_conn_set_tls_native_handle(conn_, nullptr);
  gnutls_deinit(tls_);
  tls_ = nullptr;
}

int Connection::OnRecvCryptoData(ngtcp2_conn* conn, ngtcp2_encryption_level level, uint64_t offset,
                                 const uint8_t* data, size_t datalen, void* user) {
  // After ReleaseTls a peer has nothing left to say to TLS (QUIC forbids TLS KeyUpdate, and
  // a client sends no post-handshake messages): CRYPTO data then ends the connection.
  if (static_cast<Connection*>(user)->tls_ == nullptr) return NGTCP2_ERR_CALLBACK_FAILURE;
  return ngtcp2_crypto_recv_crypto_data_cb(conn, level, offset, data, datalen, user);
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Accept(
    const TlsContext& tls, const TransportConfig& config, const ServerCidConfig& cids,
    CidRegistry* registry, const Path& path, const ngtcp2_pkt_hd& hd, const ngtcp2_cid& odcid,
    const ngtcp2_cid* retry_scid, ConnectionEvents* events, Timestamp now) {
  if (tls.side() != TlsContext::Side::kServer)
    return absl::InvalidArgumentError("quic: Accept needs a server TLS context");
  std::unique_ptr<Connection> c(new Connection(/*server=*/true, events));
  c->config_ = config;
  c->path_ = path;
  c->cids_ = cids;
  c->registry_ = registry;
  ngtcp2_cid scid;
  MakeServerCid(cids.owner_id, &scid);
  ngtcp2_settings settings;
  FillSettings(config, now, &settings);
  // A token lifts the 3x anti-amplification limit (ngtcp2 takes it as proof of the
  // address), so only a Retry token the endpoint verified is passed on.
  if (retry_scid) {
    settings.token = hd.token;
    settings.tokenlen = hd.tokenlen;
    settings.token_type = NGTCP2_TOKEN_TYPE_RETRY;
  }
  ngtcp2_transport_params params;
  FillParams(config, true, &params);
  // Without original_dcid ngtcp2 asserts and aborts the process (stack-notes gotcha 5).
  params.original_dcid = odcid;
  params.original_dcid_present = 1;
  if (retry_scid) {
    params.retry_scid = *retry_scid;
    params.retry_scid_present = 1;
  }
  params.stateless_reset_token_present = 1;
  if (cids.secret.size() < 32 ||
      ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token, cids.secret.data(),
                                                   cids.secret.size(), &scid) != 0)
    return absl::InternalError("quic: stateless reset token");
  const ngtcp2_callbacks cb = Callbacks(true);
  const ngtcp2_path np = ToNgPath(c->path_);
  const int rv = ngtcp2_conn_server_new(&c->conn_, &hd.scid, &scid, &np, hd.version, &cb,
                                        &settings, &params, NgMem(), c.get());
  if (rv != 0) return absl::InternalError(absl::StrCat("ngtcp2_conn_server_new: ", ngtcp2_strerror(rv)));
  if (auto s = c->InitTls(tls); !s.ok()) return s;
  if (config.keepalive_ns) ngtcp2_conn_set_keep_alive_timeout(c->conn_, config.keepalive_ns);
  if (registry) {
    registry->AddCid(scid, c.get());
    registry->AddCid(hd.dcid, c.get());  // the client's Initial DCID until it switches
  }
  return c;
}

// --- input and timers ------------------------------------------------------------------------

bool Connection::Fail(int liberr) {
  if (liberr == NGTCP2_ERR_CRYPTO) {
    ngtcp2_ccerr_set_tls_alert(&close_error_, ngtcp2_conn_get_tls_alert(conn_), nullptr, 0);
  } else {
    ngtcp2_ccerr_set_liberr(&close_error_, liberr, nullptr, 0);
  }
  close_requested_ = true;
  return false;
}

bool Connection::Read(const Path& path, std::span<const uint8_t> datagram, Timestamp now) {
  WantWrite();
  if (state_ == State::kClosed || state_ == State::kDraining) return false;
  if (close_requested_ && state_ != State::kClosing) return false;  // failed: only the close goes out
  if (state_ == State::kClosing) {
    // RFC 9000 10.2.1: answer packets in the closing period with the close again.
    close_written_ = false;
    return false;
  }
  if (datagram.empty()) return true;  // nothing to read; ngtcp2 asserts on empty input
  const ngtcp2_path np = ToNgPath(path);
  ngtcp2_pkt_info pi{};
  const int rv = ngtcp2_conn_read_pkt(conn_, &np, &pi, datagram.data(), datagram.size(), now);
  if (rv == 0) {
    // A server's handshake is over once ngtcp2 returns from the packet that completed it
    // (never inside the TLS call, which is still on the stack in its callbacks).
    if (server_ && tls_ && state_ == State::kEstablished) ReleaseTls();
    // The path ngtcp2 uses now: a probe on an unvalidated path does not move it. Copied
    // only when it changed (two sockaddr_storage per packet otherwise).
    const ngtcp2_path* current = ngtcp2_conn_get_path(conn_);
    const ngtcp2_path mine = ToNgPath(path_);
    if (!ngtcp2_path_eq(current, &mine)) path_ = FromNgPath(*current);
    TrackAckProgress(now);
    return true;
  }
  switch (rv) {
    case NGTCP2_ERR_DRAINING: {
      SetState(State::kDraining);
      close_deadline_ = now + 3 * ngtcp2_conn_get_pto(conn_);  // RFC 9000 10.2
      peer_closed_ = true;
      const ngtcp2_ccerr* e = ngtcp2_conn_get_ccerr(conn_);
      peer_app_error_ = e->type == NGTCP2_CCERR_TYPE_APPLICATION ? e->error_code : 0;
      return false;
    }
    case NGTCP2_ERR_DROP_CONN:
    case NGTCP2_ERR_RETRY:  // endpoints answer Retry before a connection exists
      SetState(State::kClosed);
      return false;
    case NGTCP2_ERR_DISCARD_PKT:
      return true;  // e.g. undecryptable: dropped by ngtcp2, the connection is fine
    default:
      return Fail(rv);
  }
}

void Connection::TrackAckProgress(Timestamp now) {
  ngtcp2_conn_info info;
  ngtcp2_conn_get_conn_info(conn_, &info);
  // The clock runs only while something is outstanding: it restarts when packets go out
  // after a quiet spell, and whenever an acknowledgement shrinks what is in flight.
  if (bytes_in_flight_ == 0 || info.bytes_in_flight < bytes_in_flight_ || info.bytes_in_flight == 0)
    last_ack_progress_ = now;
  bytes_in_flight_ = info.bytes_in_flight;
}

Timestamp Connection::Expiry() const {
  if (state_ == State::kClosed) return kNever;
  if (close_requested_ && !close_written_) return 0;  // write the close now
  if (state_ == State::kClosing || state_ == State::kDraining) return close_deadline_;
  Timestamp t = ngtcp2_conn_get_expiry(conn_);
  if (config_.disconnect_timeout_ns && bytes_in_flight_ > 0 && state_ != State::kClosing &&
      state_ != State::kDraining)
    t = std::min(t, last_ack_progress_ + config_.disconnect_timeout_ns);
  return t;
}

bool Connection::HandleExpiry(Timestamp now) {
  WantWrite();
  if (state_ == State::kClosed) return false;
  if (state_ == State::kClosing || state_ == State::kDraining) {
    // ngtcp2 leaves the closing and draining periods (3 PTO) to the application.
    if (now >= close_deadline_) SetState(State::kClosed);
    return state_ != State::kClosed;
  }
  if (config_.disconnect_timeout_ns && bytes_in_flight_ > 0 &&
      now - last_ack_progress_ >= config_.disconnect_timeout_ns) {
    SetState(State::kClosed);  // the path is dead: nobody would hear a CONNECTION_CLOSE
    timeout_reason_ = "disconnect timeout";
    return false;
  }
  const int rv = ngtcp2_conn_handle_expiry(conn_, now);
  if (rv == 0) return true;
  if (rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    SetState(State::kClosed);  // silently, as RFC 9000 10.1 says
    timeout_reason_ = rv == NGTCP2_ERR_IDLE_CLOSE ? "idle timeout" : "handshake timeout";
    return false;
  }
  return Fail(rv);
}


bool Connection::HasScid(std::span<const uint8_t> cid) const {
  std::array<ngtcp2_cid, 16> fixed;
  std::vector<ngtcp2_cid> more;
  const size_t n = ngtcp2_conn_get_scid(conn_, nullptr);
  ngtcp2_cid* all = fixed.data();
  if (n > fixed.size()) {
    more.resize(n);
    all = more.data();
  }
  ngtcp2_conn_get_scid(conn_, all);
  for (size_t i = 0; i < n; ++i) {
    if (all[i].datalen == cid.size() && std::memcmp(all[i].data, cid.data(), cid.size()) == 0) return true;
  }
  return false;
}

Connection::PathInfo Connection::path_info() const {
  ngtcp2_conn_info ci;
  ngtcp2_conn_get_conn_info(conn_, &ci);
  return PathInfo{ci.smoothed_rtt, ci.min_rtt, ci.latest_rtt, ci.cwnd, ci.bytes_in_flight};
}

uint64_t Connection::StreamCredit() const {
  return ngtcp2_conn_get_streams_bidi_left(conn_);
}

void Connection::Close(uint64_t app_error, std::string_view reason) {
  WantWrite();
  if (close_requested_ || state_ == State::kClosed || state_ == State::kDraining) return;
  ngtcp2_ccerr_set_application_error(&close_error_, app_error,
                                     reinterpret_cast<const uint8_t*>(reason.data()),
                                     reason.size());
  close_requested_ = true;
}

absl::Status Connection::MigrateTo(const Address& local, Timestamp now) {
  WantWrite();
  Path next{local, path_.remote};
  const ngtcp2_path np = ToNgPath(next);
  const int rv = ngtcp2_conn_initiate_immediate_migration(conn_, &np, now);
  if (rv != 0) return absl::FailedPreconditionError(absl::StrCat("migrate: ", ngtcp2_strerror(rv)));
  path_ = next;
  return absl::OkStatus();
}

absl::Status Connection::UpdateKeys(Timestamp now) {
  WantWrite();
  const int rv = ngtcp2_conn_initiate_key_update(conn_, now);
  if (rv != 0) return absl::FailedPreconditionError(absl::StrCat("key update: ", ngtcp2_strerror(rv)));
  return absl::OkStatus();
}

std::string Connection::alpn() const { return tls_ ? NegotiatedAlpn(tls_) : alpn_kept_; }

uint8_t Connection::tls_alert() const { return ngtcp2_conn_get_tls_alert(conn_); }

// --- callbacks -------------------------------------------------------------------------------

int Connection::OnRecvStreamData(ngtcp2_conn* conn, uint32_t flags, int64_t sid, uint64_t,
                                 const uint8_t* data, size_t len, void* user, void*) {
  auto* c = static_cast<Connection*>(user);
  if (c->events_) {
    c->events_->OnStreamData(sid, std::span<const uint8_t>(data, len),
                             flags & NGTCP2_STREAM_DATA_FLAG_FIN);
  }
  if (!c->config_.manual_flow_control) {
    bool held = false;
    for (HeldCredit& h : c->held_credit_) {
      if (h.stream_id == sid) h.owed += len, held = true;
    }
    if (!held) ngtcp2_conn_extend_max_stream_offset(conn, sid, len);
    ngtcp2_conn_extend_max_offset(conn, len);
  }
  return 0;
}

int Connection::OnAckedStreamDataOffset(ngtcp2_conn*, int64_t sid, uint64_t offset, uint64_t len,
                                        void* user, void*) {
  static_cast<Connection*>(user)->OnAcked(sid, offset, len);
  return 0;
}

int Connection::OnStreamClose(ngtcp2_conn* conn, uint32_t, int64_t sid, uint64_t app_error,
                              void* user, void*) {
  auto* c = static_cast<Connection*>(user);
  c->streams_.erase(sid);  // ngtcp2 no longer reads our buffers for this stream
  // The peer's limit counts streams open at once (as msquic and EMQX do): a closed
  // client stream returns its credit. ngtcp2 leaves this to the application.
  if (c->server_ && (sid & 0x3) == 0) ngtcp2_conn_extend_max_streams_bidi(conn, 1);
  if (c->events_) c->events_->OnStreamClosed(sid, app_error);
  return 0;
}

int Connection::OnStreamReset(ngtcp2_conn*, int64_t sid, uint64_t, uint64_t app_error, void* user,
                              void*) {
  auto* c = static_cast<Connection*>(user);
  if (c->events_) c->events_->OnStreamReset(sid, app_error);
  return 0;
}

int Connection::OnStreamStopSending(ngtcp2_conn*, int64_t sid, uint64_t app_error, void* user,
                                    void*) {
  auto* c = static_cast<Connection*>(user);
  if (c->events_) c->events_->OnStreamStopSending(sid, app_error);
  return 0;
}

int Connection::OnHandshakeCompleted(ngtcp2_conn* conn, void* user) {
  auto* c = static_cast<Connection*>(user);
  // The TLS layer decides whether the server took our 0-RTT; ngtcp2 must be told when it
  // did not, so it drops the early streams (and calls tls_early_data_rejected).
  if (!c->server_ && c->early_data_possible_ && !c->early_data_accepted() &&
      ngtcp2_conn_tls_early_data_rejected(conn) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  if (c->server_) return OnHandshakeConfirmed(conn, user);
  return 0;
}

int Connection::OnHandshakeConfirmed(ngtcp2_conn*, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (c->state_ != State::kHandshaking) return 0;
  c->SetState(State::kEstablished);
  if (c->events_) c->events_->OnHandshakeConfirmed();
  return 0;
}

int Connection::OnExtendMaxStreams(ngtcp2_conn*, uint64_t, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (c->events_) c->events_->OnStreamCredit();
  return 0;
}

int Connection::OnGetNewConnectionId(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen,
                                     void* user) {
  auto* c = static_cast<Connection*>(user);
  if (c->server_) {
    MakeServerCid(c->cids_.owner_id, cid);
    if (ngtcp2_crypto_generate_stateless_reset_token(token, c->cids_.secret.data(),
                                                     c->cids_.secret.size(), cid) != 0)
      return NGTCP2_ERR_CALLBACK_FAILURE;
    if (c->registry_) c->registry_->AddCid(*cid, c);
  } else {
    cid->datalen = cidlen;
    RandomBytes(cid->data, cidlen);
    RandomBytes(token, NGTCP2_STATELESS_RESET_TOKENLEN);
  }
  return 0;
}

int Connection::OnRemoveConnectionId(ngtcp2_conn*, const ngtcp2_cid* cid, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (c->registry_) c->registry_->RemoveCid(*cid);
  return 0;
}

int Connection::OnEarlyDataRejected(ngtcp2_conn*, void* user) {
  auto* c = static_cast<Connection*>(user);
  // ngtcp2 discards the streams opened in 0-RTT; so do we. The owner resends.
  c->early_data_rejected_ = true;
  c->streams_.clear();
  if (c->events_) c->events_->OnEarlyDataRejected();
  return 0;
}

}  // namespace qbridge::quic
