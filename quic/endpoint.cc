#include "quic/endpoint.h"

#include <algorithm>

#include "absl/strings/string_view.h"

namespace qbridge::quic {
namespace {

std::string Key(const uint8_t* cid, size_t len) {
  return std::string(reinterpret_cast<const char*>(cid), len);
}

// For lookups: absl's string hash and equality are transparent, so finding a CID needs no
// std::string (a 16-byte CID is one past the small-string buffer: a heap allocation for
// every datagram).
absl::string_view View(const uint8_t* cid, size_t len) {
  return absl::string_view(reinterpret_cast<const char*>(cid), len);
}

}  // namespace

ServerEndpoint::ServerEndpoint(const TlsContext& tls, EndpointConfig config)
    : tls_(tls), config_(std::move(config)) {}

ServerEndpoint::~ServerEndpoint() {
  // The connections go with the endpoint. on_close is not called here: the objects the
  // callback would touch may already be gone (they often are declared after it).
  by_cid_.clear();
  for (auto& [c, e] : conns_) {
    e.conn->set_events(nullptr);
    e.conn->SetRegistry(nullptr);
  }
}

absl::StatusOr<std::unique_ptr<ServerEndpoint>> ServerEndpoint::Create(const TlsContext& tls,
                                                                       EndpointConfig config) {
  if (tls.side() != TlsContext::Side::kServer)
    return absl::InvalidArgumentError("quic: a server endpoint needs a server TLS context");
  if (config.secret.empty()) {
    config.secret.resize(32);
    RandomBytes(config.secret.data(), config.secret.size());
  }
  if (config.secret.size() < 32)
    return absl::InvalidArgumentError("quic: endpoint secret must be at least 32 bytes");
  return std::unique_ptr<ServerEndpoint>(new ServerEndpoint(tls, std::move(config)));
}

void ServerEndpoint::AddCid(const ngtcp2_cid& cid, Connection* conn) {
  const std::string k = Key(cid.data, cid.datalen);
  by_cid_[k] = conn;
  auto it = conns_.find(conn);
  if (it != conns_.end()) it->second.cids.insert(k);
}

void ServerEndpoint::RemoveCid(const ngtcp2_cid& cid) {
  auto it = by_cid_.find(View(cid.data, cid.datalen));
  if (it == by_cid_.end()) return;
  auto e = conns_.find(it->second);
  if (e != conns_.end()) e->second.cids.erase(it->first);  // retired CIDs do not pile up
  by_cid_.erase(it);
}

Connection* ServerEndpoint::Find(const uint8_t* cid, size_t len) const {
  auto it = by_cid_.find(View(cid, len));
  return it == by_cid_.end() ? nullptr : it->second;
}

bool ServerEndpoint::RetryRequired(Timestamp now) {
  if (now - rate_window_start_ >= kSecond) {
    rate_window_start_ = now;
    rate_window_count_ = 0;
  }
  switch (config_.retry) {
    case RetryMode::kOff: return false;
    case RetryMode::kAlways: return true;
    case RetryMode::kUnderLoad:
      return Handshakes() >= config_.retry_threshold || rate_window_count_ >= config_.retry_rate;
  }
  return true;
}

void ServerEndpoint::SendVersionNegotiation(const Path& path, const ngtcp2_version_cid& vc,
                                            Emit emit) {
  const uint32_t versions[] = {NGTCP2_PROTO_VER_V1};
  uint8_t unused;
  RandomBytes(&unused, 1);
  // Echo the client's CIDs swapped (RFC 9000 17.2.1).
  const ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(
      reply_.data(), reply_.size(), unused, vc.scid, vc.scidlen, vc.dcid, vc.dcidlen, versions, 1);
  if (n <= 0) return;
  ++stats_.version_negotiation_sent;
  emit(path, std::span<const uint8_t>(reply_.data(), size_t(n)), size_t(n));
}

void ServerEndpoint::SendRetry(const Path& path, const ngtcp2_pkt_hd& hd, Timestamp now,
                               Emit emit) {
  ngtcp2_cid retry_scid;
  MakeServerCid(config_.owner_id, &retry_scid);
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2];
  const ngtcp2_ssize tokenlen = ngtcp2_crypto_generate_retry_token2(
      token, config_.secret.data(), config_.secret.size(), hd.version, path.remote.sa(),
      path.remote.len, &retry_scid, &hd.dcid, now);
  if (tokenlen < 0) return;
  const ngtcp2_ssize n = ngtcp2_crypto_write_retry(reply_.data(), reply_.size(), hd.version,
                                                   &hd.scid, &retry_scid, &hd.dcid, token,
                                                   size_t(tokenlen));
  if (n <= 0) return;
  ++stats_.retry_sent;
  emit(path, std::span<const uint8_t>(reply_.data(), size_t(n)), size_t(n));
}

void ServerEndpoint::SendStatelessReset(const Path& path, const uint8_t* dcid, size_t dcidlen,
                                        size_t pktlen, Emit emit) {
  // Smaller than what provoked it, so two endpoints cannot loop (RFC 9000 10.3.3), and
  // large enough to look like a short-header packet.
  constexpr size_t kMinReset = 1 + 20 + NGTCP2_STATELESS_RESET_TOKENLEN;
  if (pktlen <= kMinReset || dcidlen > NGTCP2_MAX_CIDLEN) return;
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, dcid, dcidlen);
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
  if (ngtcp2_crypto_generate_stateless_reset_token(token, config_.secret.data(),
                                                   config_.secret.size(), &cid) != 0)
    return;
  const size_t randlen = std::min<size_t>(pktlen - 1, 64) - NGTCP2_STATELESS_RESET_TOKENLEN;
  uint8_t rand[64];
  RandomBytes(rand, randlen);
  const ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(reply_.data(), reply_.size(), token,
                                                          rand, randlen);
  if (n <= 0) return;
  ++stats_.stateless_reset_sent;
  emit(path, std::span<const uint8_t>(reply_.data(), size_t(n)), size_t(n));
}

void ServerEndpoint::Receive(const Path& path, std::span<const uint8_t> data, Timestamp now,
                             Emit emit) {
  ++stats_.datagrams_in;
  if (data.empty()) {  // ngtcp2_pkt_decode_version_cid asserts on empty input
    ++stats_.drop_bad_header;
    return;
  }
  ngtcp2_version_cid vc;
  const int rv = ngtcp2_pkt_decode_version_cid(&vc, data.data(), data.size(), kServerCidLen);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    SendVersionNegotiation(path, vc, emit);
    return;
  }
  if (rv != 0) {
    ++stats_.drop_bad_header;
    return;
  }
  if (Connection* c = Find(vc.dcid, vc.dcidlen)) {
    c->Read(path, data, now);
    Track(c);
    return;
  }
  if (data[0] & 0x80) {
    if (vc.version == 0) {  // a Version Negotiation packet sent to a server: never valid
      ++stats_.drop_bad_header;
      return;
    }
  } else {
    // A short-header packet for a connection we do not know. Reset it only when the CID
    // is one this endpoint would have issued (we restarted and lost it); a CID of another
    // owner (a worker or box sharing the secret) belongs to a live connection elsewhere.
    if (vc.dcidlen != kServerCidLen || CidOwner(vc.dcid, vc.dcidlen) != config_.owner_id) {
      ++stats_.drop_short_foreign;
      return;
    }
    ++stats_.drop_short_unknown;
    SendStatelessReset(path, vc.dcid, vc.dcidlen, data.size(), emit);
    return;
  }
  if (vc.dcidlen > NGTCP2_MAX_CIDLEN || vc.scidlen > NGTCP2_MAX_CIDLEN) {
    ++stats_.drop_bad_header;  // v1 caps CIDs at 20 bytes; ngtcp2 asserts beyond
    return;
  }
  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, data.data(), data.size()) != 0) {
    ++stats_.drop_not_initial;  // 0-RTT or Handshake for no connection, or garbage
    return;
  }
  if (conns_.size() >= config_.max_connections) {
    ++stats_.drop_connection_limit;
    return;
  }
  if (Handshakes() >= config_.max_handshakes) {
    ++stats_.drop_handshake_limit;
    return;
  }

  ngtcp2_cid odcid = hd.dcid;
  ngtcp2_cid retry_scid;
  bool retried = false;
  if (hd.tokenlen > 0 && hd.token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2) {
    if (ngtcp2_crypto_verify_retry_token2(&odcid, hd.token, hd.tokenlen, config_.secret.data(),
                                          config_.secret.size(), hd.version, path.remote.sa(),
                                          path.remote.len, &hd.dcid,
                                          config_.retry_token_lifetime_ns, now) != 0) {
      ++stats_.drop_bad_token;  // forged, expired, or from another address
      return;
    }
    retry_scid = hd.dcid;
    retried = true;
  } else if (RetryRequired(now)) {
    SendRetry(path, hd, now, emit);
    return;
  }

  auto conn = Connection::Accept(tls_, config_.transport,
                                 ServerCidConfig{config_.owner_id, config_.secret}, nullptr, path,
                                 hd, odcid, retried ? &retry_scid : nullptr, nullptr, now);
  if (!conn.ok()) {
    ++stats_.drop_accept_failed;
    return;
  }
  Connection* c = conn->get();
  Entry& e = conns_[c];
  e.conn = std::move(*conn);
  if (c->state() == Connection::State::kHandshaking) {
    ++handshaking_;
    c->CountHandshakeIn(&handshaking_);
  }
  ++stats_.accepted;
  ++rate_window_count_;
  // Register the CIDs the connection was created with; later ones arrive by callback.
  std::vector<ngtcp2_cid> scids(ngtcp2_conn_get_scid(c->raw(), nullptr));
  ngtcp2_conn_get_scid(c->raw(), scids.data());
  for (const ngtcp2_cid& cid : scids) AddCid(cid, c);
  AddCid(hd.dcid, c);
  c->SetRegistry(this);
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = uint32_t(slot_conn_.size());
    slot_conn_.push_back(nullptr);
  }
  slot_conn_[slot] = c;
  c->set_endpoint_slot(slot);
  dirty_.push_back(c);  // a new connection wants to write (its flag starts set)
  if (on_accept_) c->set_events(on_accept_(*c));
  if (!c->Read(path, data, now) && c->state() == Connection::State::kClosed) {
    Reap(c);
    return;
  }
  Track(c);
}

size_t ServerEndpoint::WriteAll(Timestamp now, std::span<uint8_t> scratch, size_t max_per_conn,
                                Emit emit) {
  size_t n = 0;
  writing_.swap(dirty_);  // what asks to write while these write joins dirty_ again
  for (Connection* c : writing_) {
    n += c->Write(now, scratch, max_per_conn, emit);
    Track(c);
    if (c->want_write()) dirty_.push_back(c);  // batch limits: more next time
  }
  writing_.clear();
  return n;
}

Timestamp ServerEndpoint::Expiry() const { return expiry_.Top(); }

void ServerEndpoint::Reap(Connection* c) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  for (const std::string& k : it->second.cids) {
    auto m = by_cid_.find(k);
    if (m != by_cid_.end() && m->second == c) by_cid_.erase(m);
  }
  if (on_close_) on_close_(*c);
  ++stats_.closed;
  const uint32_t slot = c->endpoint_slot();
  slot_conn_[slot] = nullptr;
  expiry_.Remove(slot);
  free_slots_.push_back(slot);
  std::erase(dirty_, c);
  conns_.erase(it);
}

void ServerEndpoint::HandleExpiry(Timestamp now) {
  // The slots due now, taken first: each is handled once per call even if its next
  // deadline is already due again.
  due_.clear();
  while (!expiry_.empty() && expiry_.Top() <= now) {
    due_.push_back(expiry_.TopSlot());
    expiry_.Remove(due_.back());
  }
  std::vector<Connection*> dead;  // reaped after the others ran (allocates only when one died)
  for (const uint32_t slot : due_) {
    Connection* c = slot_conn_[slot];
    if (c->state() != Connection::State::kClosed && c->Expiry() <= now) c->HandleExpiry(now);
    Track(c);
    if (c->state() == Connection::State::kClosed) dead.push_back(c);
  }
  for (Connection* c : dead) Reap(c);
}

}  // namespace qbridge::quic
