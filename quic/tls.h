// TLS through GnuTLS: for QUIC (TLS 1.3 via ngtcp2_crypto_gnutls) and for MQTT over TLS on
// TCP (TLS 1.2 and 1.3 records, quic/tls_stream.h). Credentials and priorities are
// loaded once per listener or bridge (TlsContext), and each connection gets a session from it.
#pragma once

#include <gnutls/gnutls.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace qbridge::quic {

struct TlsConfig {
  // Our certificate chain and key (PEM). Required for a server; for a client they turn
  // on client-certificate authentication (mTLS).
  std::string certfile;
  std::string keyfile;
  // Trust anchors (PEM). A client verifies the server against them; a server with
  // verify_peer requires and verifies client certificates against them.
  std::string cacertfile;
  // Client: verify the server's certificate chain and that it names `server_name` (DNS or
  // IP SAN). On by default; turning it off needs `insecure` too, so it is never an
  // accident. Server: require a client certificate.
  bool verify_peer = true;
  bool insecure = false;
  // Client: the name to verify and to send as SNI (an IP literal is verified against IP
  // SANs and not sent as SNI, per RFC 6066).
  std::string server_name;
  // Client: send this as SNI instead (even an IP literal, as NanoMQ does); for tests and
  // for upstreams that route on a name other than the one verified.
  std::string sni;
  // ALPN protocols, in preference order. EMQX and NanoMQ use exactly "mqtt".
  std::vector<std::string> alpn = {"mqtt"};
  // TLS over TCP instead of QUIC: TLS 1.2 and 1.3; ALPN "mqtt" accepted when a client
  // offers it but never required, and not offered by a client (mosquitto and most devices
  // send none).
  bool stream = false;
  // Server over TCP (NanoMQ's fail_if_no_peer_cert): with verify_peer, a client without a
  // certificate is refused; without this it is let in, and one that sends a certificate
  // must still pass verification. (QUIC servers with verify_peer always require one.)
  bool fail_if_no_peer_cert = true;
};

class TlsContext {
 public:
  enum class Side { kClient, kServer };

  static absl::StatusOr<std::unique_ptr<TlsContext>> Create(Side side, const TlsConfig& config);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // A new session configured for QUIC (ngtcp2_crypto_gnutls), TLS 1.3 only, ALPN set,
  // verification as configured. `conn_ref` is the ngtcp2_crypto_conn_ref the crypto
  // callbacks find the connection through. The caller owns the session.
  absl::StatusOr<gnutls_session_t> NewSession(void* conn_ref) const;
  // A new session for TLS over a byte stream (config().stream), non-blocking; the caller
  // sets its transport and owns it. A server that verifies client certificates writes a
  // failed verification's status to *(unsigned*)gnutls_session_get_ptr() when that is set.
  absl::StatusOr<gnutls_session_t> NewStreamSession() const;

  Side side() const { return side_; }
  const TlsConfig& config() const { return config_; }

 private:
  TlsContext(Side side, TlsConfig config) : side_(side), config_(std::move(config)) {}

  // A client session's SNI and verification (server name); a GnuTLS error code or 0.
  int SetUpClient(gnutls_session_t s) const;

  Side side_;
  TlsConfig config_;
  gnutls_certificate_credentials_t creds_ = nullptr;
  gnutls_priority_t priority_ = nullptr;
  std::vector<gnutls_datum_t> alpn_;
  // Server: the key session tickets are sealed with (per context: a new context cannot
  // resume an old one's tickets) and the 0-RTT anti-replay window.
  gnutls_datum_t ticket_key_{};
  gnutls_anti_replay_t anti_replay_ = nullptr;
  // ClientHellos that carried early data within the anti-replay window: a second use of
  // the same one is refused 0-RTT (RFC 8446 8). Bounded; when full, early data is refused.
  static int AntiReplayAdd(void* ctx, time_t expires, const gnutls_datum_t* key,
                           const gnutls_datum_t* data);
  absl::flat_hash_map<std::string, time_t> seen_hellos_;
};

// The negotiated ALPN of a finished handshake, or "" if none.
std::string NegotiatedAlpn(gnutls_session_t session);

// Why a handshake that returned `rc` failed, for a log line: the certificate checks that
// failed ("certificate is not trusted: issuer unknown", "expired", "name mismatch ..."),
// the alert the peer sent, or GnuTLS's text. `verify_status`: what a stream server's verify
// function recorded (NewStreamSession).
std::string HandshakeError(gnutls_session_t session, int rc, unsigned verify_status = 0);

}  // namespace qbridge::quic
