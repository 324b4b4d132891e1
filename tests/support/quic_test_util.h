// Pieces the QUIC tests and benchmarks share: an event recorder that can echo, TLS
// contexts over the per-process test certificates, and a burst of fresh client Initials.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "quic/connection.h"
#include "quic/endpoint.h"
#include "quic/tls.h"
#include "tests/support/test_certs.h"

namespace qbridge::testing {

// Records everything a connection reports; optionally echoes stream data back.
class RecordingEvents : public quic::ConnectionEvents {
 public:
  quic::Connection* conn = nullptr;
  bool echo = false;
  bool confirmed = false;
  std::string alpn;  // captured at confirmation (the connection may be gone later)
  std::map<int64_t, std::vector<uint8_t>> data;
  std::map<int64_t, bool> fin;
  std::vector<int64_t> order;  // stream of each delivery, in order
  std::map<int64_t, uint64_t> reset;
  std::map<int64_t, uint64_t> others_at_first_byte;  // bytes on other streams by then
  uint64_t total = 0;
  int credit_events = 0;

  void OnHandshakeConfirmed() override {
    confirmed = true;
    if (conn) alpn = conn->alpn();
  }
  void OnStreamData(int64_t sid, std::span<const uint8_t> d, bool f) override {
    auto& v = data[sid];
    if (v.empty() && !d.empty()) others_at_first_byte[sid] = total;
    v.insert(v.end(), d.begin(), d.end());
    total += d.size();
    if (!d.empty()) order.push_back(sid);
    if (f) fin[sid] = true;
    if (echo && conn && (!d.empty() || f)) {
      quic::Buffer copy = quic::Buffer::Copy(d);
      EXPECT_TRUE(conn->Send(sid, copy, f).ok());
    }
  }
  void OnStreamReset(int64_t sid, uint64_t err) override { reset[sid] = err; }
  void OnStreamCredit() override { ++credit_events; }
};

inline quic::TlsConfig ServerTlsConfig() {
  const TestCerts& certs = GetTestCerts();
  quic::TlsConfig c;
  c.certfile = certs.server_cert;
  c.keyfile = certs.server_key;
  c.verify_peer = false;
  return c;
}

inline quic::TlsConfig ClientTlsConfig(const std::string& server_name = "localhost") {
  quic::TlsConfig c;
  c.cacertfile = GetTestCerts().ca;
  c.server_name = server_name;
  return c;
}

// Both sides' contexts with the default test configuration.
struct TestTls {
  std::unique_ptr<quic::TlsContext> server, client;
  explicit TestTls(const std::string& server_name = "localhost") {
    auto s = quic::TlsContext::Create(quic::TlsContext::Side::kServer, ServerTlsConfig());
    auto c = quic::TlsContext::Create(quic::TlsContext::Side::kClient, ClientTlsConfig(server_name));
    if (s.ok()) server = std::move(*s);
    if (c.ok()) client = std::move(*c);
  }
  bool ok() const { return server && client; }
};

// `n` new clients, each from its own port on `ip`, send their first flight straight to
// `endpoint` (its replies are dropped): load for the endpoint's admission control.
inline void FireInitials(quic::ServerEndpoint& endpoint, const quic::TlsContext& client_tls,
                         const quic::TransportConfig& transport, int n, const std::string& ip,
                         uint16_t base_port, quic::Timestamp now) {
  std::vector<uint8_t> scratch(64 * 1500);
  RecordingEvents sink;
  const auto server = quic::Address::FromIpPort("198.18.0.2", 14567);
  for (int i = 0; i < n; ++i) {
    const auto from = quic::Address::FromIpPort(ip, uint16_t(base_port + i));
    auto c = quic::Connection::Connect(client_tls, transport, quic::Path{from, server}, &sink, now);
    ASSERT_TRUE(c.ok());
    (*c)->Write(now, scratch, 64, [&](const quic::Path& p, std::span<const uint8_t> d, size_t) {
      endpoint.Receive(quic::Path{p.remote, p.local}, d, now,
                       [](const quic::Path&, std::span<const uint8_t>, size_t) {});
    });
  }
}

}  // namespace qbridge::testing
