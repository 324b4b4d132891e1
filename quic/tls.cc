#include "quic/tls.h"

#include <arpa/inet.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "absl/strings/str_cat.h"

namespace qbridge::quic {
namespace {

// TLS 1.3 only, the AEADs QUIC uses, no middlebox compatibility mode (RFC 9001 8.4).
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";
// TLS over TCP: 1.3, and 1.2 for the devices that have nothing newer; GnuTLS's NORMAL
// suites otherwise (AEADs first, no RC4/3DES/SSL3).
constexpr const char* kStreamPriority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";

absl::Status TlsError(const std::string& what, int rc) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", gnutls_strerror(rc)));
}

bool IsIpLiteral(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::Create(Side side, const TlsConfig& config) {
  std::unique_ptr<TlsContext> ctx(new TlsContext(side, config));
  if (config.alpn.empty()) return absl::InvalidArgumentError("tls: alpn list is empty");
  if (side == Side::kClient && !config.verify_peer && !config.insecure)
    return absl::InvalidArgumentError(
        "tls: verify_peer = false needs insecure = true as well; certificate checks are "
        "only turned off on purpose");
  if (side == Side::kClient && config.verify_peer && config.server_name.empty())
    return absl::InvalidArgumentError("tls: a verifying client needs server_name");
  if (side == Side::kServer && (config.certfile.empty() || config.keyfile.empty()))
    return absl::InvalidArgumentError("tls: a server needs certfile and keyfile");
  if (config.verify_peer && config.cacertfile.empty() && side == Side::kServer)
    return absl::InvalidArgumentError("tls: verify_peer on a server needs cacertfile");

  int rc = gnutls_certificate_allocate_credentials(&ctx->creds_);
  if (rc < 0) return TlsError("tls: credentials", rc);
  if (!config.certfile.empty() || !config.keyfile.empty()) {
    rc = gnutls_certificate_set_x509_key_file(ctx->creds_, config.certfile.c_str(),
                                              config.keyfile.c_str(), GNUTLS_X509_FMT_PEM);
    if (rc < 0) return TlsError(absl::StrCat("tls: loading ", config.certfile), rc);
  }
  if (!config.cacertfile.empty()) {
    rc = gnutls_certificate_set_x509_trust_file(ctx->creds_, config.cacertfile.c_str(),
                                                GNUTLS_X509_FMT_PEM);
    if (rc <= 0)
      return rc < 0 ? TlsError(absl::StrCat("tls: loading ", config.cacertfile), rc)
                    : absl::InvalidArgumentError(
                          absl::StrCat("tls: no certificate in ", config.cacertfile));
  } else if (side == Side::kClient && config.verify_peer) {
    rc = gnutls_certificate_set_x509_system_trust(ctx->creds_);
    if (rc <= 0)
      return absl::InvalidArgumentError("tls: no cacertfile and no system trust store");
  }
  const char* err = nullptr;
  rc = gnutls_priority_init(&ctx->priority_, config.stream ? kStreamPriority : kPriority, &err);
  if (rc < 0) return TlsError("tls: priority", rc);
  if (side == Side::kServer && config.stream) {
    if ((rc = gnutls_session_ticket_key_generate(&ctx->ticket_key_)) < 0)
      return TlsError("tls: ticket key", rc);
  } else if (side == Side::kServer) {
    if ((rc = gnutls_session_ticket_key_generate(&ctx->ticket_key_)) < 0)
      return TlsError("tls: ticket key", rc);
    if ((rc = gnutls_anti_replay_init(&ctx->anti_replay_)) < 0)
      return TlsError("tls: anti-replay", rc);
    gnutls_anti_replay_set_add_function(ctx->anti_replay_, AntiReplayAdd);
    gnutls_anti_replay_set_ptr(ctx->anti_replay_, ctx.get());
  }
  // alpn_ points into config_'s strings, which live as long as the context.
  for (const std::string& p : ctx->config_.alpn) {
    ctx->alpn_.push_back(gnutls_datum_t{
        reinterpret_cast<unsigned char*>(const_cast<char*>(p.data())), unsigned(p.size())});
  }
  return ctx;
}

int TlsContext::AntiReplayAdd(void* ptr, time_t expires, const gnutls_datum_t* key,
                              const gnutls_datum_t*) {
  auto* ctx = static_cast<TlsContext*>(ptr);
  constexpr size_t kMaxEntries = 100'000;
  const time_t now = time(nullptr);
  if (ctx->seen_hellos_.size() >= kMaxEntries) {
    absl::erase_if(ctx->seen_hellos_, [&](const auto& e) { return e.second < now; });
    if (ctx->seen_hellos_.size() >= kMaxEntries) return GNUTLS_E_DB_ERROR;  // refuse 0-RTT
  }
  std::string k(reinterpret_cast<const char*>(key->data), key->size);
  auto [it, inserted] = ctx->seen_hellos_.emplace(std::move(k), expires);
  if (!inserted && it->second >= now) return GNUTLS_E_DB_ENTRY_EXISTS;  // a replay
  it->second = expires;
  return 0;
}

TlsContext::~TlsContext() {
  if (anti_replay_) gnutls_anti_replay_deinit(anti_replay_);
  if (ticket_key_.data) gnutls_memset(ticket_key_.data, 0, ticket_key_.size), gnutls_free(ticket_key_.data);
  if (priority_) gnutls_priority_deinit(priority_);
  if (creds_) gnutls_certificate_free_credentials(creds_);
}

int TlsContext::SetUpClient(gnutls_session_t s) const {
  const std::string& name = config_.server_name;
  const std::string& sni = config_.sni.empty() ? name : config_.sni;
  if (!sni.empty() && (!config_.sni.empty() || !IsIpLiteral(sni))) {
    if (const int rc = gnutls_server_name_set(s, GNUTLS_NAME_DNS, sni.data(), sni.size()); rc < 0) return rc;
  }
  // Verifies chain and name (DNS SAN, or IP SAN for a literal) during the handshake.
  if (config_.verify_peer) gnutls_session_set_verify_cert(s, name.c_str(), 0);
  return 0;
}

absl::StatusOr<gnutls_session_t> TlsContext::NewSession(void* conn_ref) const {
  const bool server = side_ == Side::kServer;
  gnutls_session_t s = nullptr;
  int rc = gnutls_init(&s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_ENABLE_EARLY_DATA |
                               GNUTLS_NO_END_OF_EARLY_DATA);
  if (rc < 0) return TlsError("tls: session", rc);
  auto fail = [&](const std::string& what, int code) {
    gnutls_deinit(s);
    return TlsError(what, code);
  };
  if (server ? ngtcp2_crypto_gnutls_configure_server_session(s) != 0
             : ngtcp2_crypto_gnutls_configure_client_session(s) != 0) {
    gnutls_deinit(s);
    return absl::InternalError("tls: ngtcp2_crypto_gnutls_configure_*_session failed");
  }
  if ((rc = gnutls_priority_set(s, priority_)) < 0) return fail("tls: priority", rc);
  if ((rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds_)) < 0)
    return fail("tls: credentials", rc);
  if ((rc = gnutls_alpn_set_protocols(s, alpn_.data(), unsigned(alpn_.size()),
                                      GNUTLS_ALPN_MANDATORY)) < 0)
    return fail("tls: alpn", rc);
  if (server) {
    // Resumption and 0-RTT: tickets sealed with this context's key; early data accepted
    // (the MQTT layer puts only CONNECT/SUBSCRIBE there) behind the anti-replay window.
    if ((rc = gnutls_session_ticket_enable_server(s, &ticket_key_)) < 0)
      return fail("tls: tickets", rc);
    gnutls_anti_replay_enable(s, anti_replay_);
    gnutls_record_set_max_early_data_size(s, 0xffffffffu);
    if (config_.verify_peer) {
      gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
      gnutls_session_set_verify_cert(s, nullptr, 0);  // chain only: clients have no name
    }
  } else if ((rc = SetUpClient(s)) < 0) {
    return fail("tls: sni", rc);
  }
  gnutls_session_set_ptr(s, conn_ref);
  return s;
}

absl::StatusOr<gnutls_session_t> TlsContext::NewStreamSession() const {
  const bool server = side_ == Side::kServer;
  gnutls_session_t s = nullptr;
  int rc = gnutls_init(&s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);
  if (rc < 0) return TlsError("tls: session", rc);
  auto fail = [&](const std::string& what, int code) {
    gnutls_deinit(s);
    return TlsError(what, code);
  };
  if ((rc = gnutls_priority_set(s, priority_)) < 0) return fail("tls: priority", rc);
  if ((rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds_)) < 0)
    return fail("tls: credentials", rc);
  if (server) {
    if ((rc = gnutls_alpn_set_protocols(s, alpn_.data(), unsigned(alpn_.size()), 0)) < 0)
      return fail("tls: alpn", rc);
    if ((rc = gnutls_session_ticket_enable_server(s, &ticket_key_)) < 0)
      return fail("tls: tickets", rc);
    if (config_.verify_peer) {
      // REQUEST: a client without a certificate gets through (GnuTLS verifies one that is
      // sent); REQUIRE: it does not.
      gnutls_certificate_server_set_request(
          s, config_.fail_if_no_peer_cert ? GNUTLS_CERT_REQUIRE : GNUTLS_CERT_REQUEST);
      gnutls_session_set_verify_function(s, [](gnutls_session_t ss) -> int {
        unsigned n = 0;
        if (gnutls_certificate_get_peers(ss, &n) == nullptr || n == 0) return 0;  // asked, not required
        unsigned status = 0;
        if (gnutls_certificate_verify_peers2(ss, &status) < 0 || status != 0) {
          // For HandshakeError: the session pointer, when set, is where the status goes.
          if (auto* out = static_cast<unsigned*>(gnutls_session_get_ptr(ss))) *out = status | GNUTLS_CERT_INVALID;
          return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
        }
        return 0;
      });
    }
  } else if ((rc = SetUpClient(s)) < 0) {
    return fail("tls: sni", rc);
  }
  return s;
}

std::string HandshakeError(gnutls_session_t session, int rc, unsigned verify_status) {
  if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR || rc == GNUTLS_E_CERTIFICATE_ERROR) {
    // Auto-verification (a client) keeps its status; the stream server's verify function
    // leaves it where the session pointer points (verify_status).
    unsigned status = gnutls_session_get_verify_cert_status(session);
    if (status == 0 || status == unsigned(-1)) status = verify_status;  // -1: no auto-verification
    gnutls_datum_t out{};
    if (status != 0 && gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
      std::string text(reinterpret_cast<const char*>(out.data), out.size);
      gnutls_free(out.data);
      return absl::StrCat("certificate verification failed: ", text);
    }
    return absl::StrCat("certificate verification failed: ", gnutls_strerror(rc));
  }
  if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED || rc == GNUTLS_E_WARNING_ALERT_RECEIVED) {
    const char* name = gnutls_alert_get_name(gnutls_alert_get(session));
    return absl::StrCat("the peer sent alert \"", name ? name : "unknown", "\"");
  }
  if (rc == GNUTLS_E_DECRYPTION_FAILED) {
    // OpenSSL's TLS 1.3 client sends the alert for a certificate it refuses (unknown CA,
    // wrong name) unencrypted, which is all GnuTLS then sees.
    return "a record the peer sent could not be decrypted (a TLS 1.3 client that refuses our "
           "certificate, its CA unknown to it say, sends its alert so)";
  }
  if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND || rc == GNUTLS_E_CERTIFICATE_REQUIRED)
    return "no client certificate (fail_if_no_peer_cert is on)";
  return gnutls_strerror(rc);
}

std::string NegotiatedAlpn(gnutls_session_t session) {
  gnutls_datum_t p{};
  if (gnutls_alpn_get_selected_protocol(session, &p) != 0) return "";
  return std::string(reinterpret_cast<const char*>(p.data), p.size);
}

}  // namespace qbridge::quic
