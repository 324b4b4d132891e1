// The fixture the QUIC unit tests share: a server endpoint and a client connection with
// real TLS credentials over the deterministic in-process link (tests/support/quic_sim.h).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>

#include "quic/connection.h"
#include "quic/endpoint.h"
#include "quic/tls.h"
#include "tests/support/quic_sim.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/test_certs.h"

namespace qbridge::quic {

using qbridge::testing::GetTestCerts;
using qbridge::testing::LinkConfig;
using qbridge::testing::QuicSim;

using Recorder = qbridge::testing::RecordingEvents;

class QuicTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& certs = GetTestCerts();
    ASSERT_FALSE(certs.dir.empty()) << "openssl could not make test certificates";
    server_tls_config_.certfile = certs.server_cert;
    server_tls_config_.keyfile = certs.server_key;
    server_tls_config_.verify_peer = false;
    client_tls_config_.cacertfile = certs.ca;
    client_tls_config_.server_name = "localhost";
    endpoint_config_.retry = RetryMode::kOff;
  }

  // Builds the server endpoint and the client connection over `sim`.
  void Start(QuicSim& sim) {
    auto stls = TlsContext::Create(TlsContext::Side::kServer, server_tls_config_);
    ASSERT_TRUE(stls.ok()) << stls.status();
    server_tls_ = std::move(*stls);
    auto ep = ServerEndpoint::Create(*server_tls_, endpoint_config_);
    ASSERT_TRUE(ep.ok()) << ep.status();
    endpoint_ = std::move(*ep);
    endpoint_->set_on_accept([this](Connection& c) {
      server_events_.conn = &c;
      server_conn_ = &c;
      return &server_events_;
    });
    endpoint_->set_on_close([this](Connection& c) {
      if (server_conn_ == &c) server_conn_ = nullptr;
      server_events_.conn = nullptr;
    });
    auto ctls = TlsContext::Create(TlsContext::Side::kClient, client_tls_config_);
    ASSERT_TRUE(ctls.ok()) << ctls.status();
    client_tls_ = std::move(*ctls);
    auto c = Connection::Connect(*client_tls_, client_transport_, sim.ClientPath(),
                                 &client_events_, sim.now());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
    client_events_.conn = client_.get();
    sim.client = client_.get();
    sim.server = endpoint_.get();
  }

  bool Handshake(QuicSim& sim) {
    return sim.RunUntil(
        [&] { return client_events_.confirmed && server_conn_ && server_conn_->handshake_confirmed(); },
        5 * kSecond);
  }

  // Echoes 5,000 bytes, runs `disrupt` (a key update, a migration), echoes 5,000 more
  // with FIN on the same stream: the connection must carry on across it.
  void EchoAround(QuicSim& sim, const std::function<void()>& disrupt) {
    server_events_.echo = true;
    ASSERT_TRUE(Handshake(sim));
    auto sid = client_->OpenStream();
    ASSERT_TRUE(sid.ok());
    ASSERT_TRUE(client_->Send(*sid, Bytes(5000, 1)).ok());
    ASSERT_TRUE(sim.RunUntil([&] { return client_events_.data[*sid].size() == 5000; }, 5 * kSecond));
    disrupt();
    ASSERT_TRUE(client_->Send(*sid, Bytes(5000, 2), true).ok());
    ASSERT_TRUE(sim.RunUntil([&] { return client_events_.fin[*sid]; }, 10 * kSecond));
    EXPECT_EQ(client_events_.data[*sid].size(), 10000u);
  }

  static Buffer Bytes(size_t n, uint8_t seed) {
    Buffer v = Buffer::Allocate(n);
    for (size_t i = 0; i < n; ++i) v.mutable_span()[i] = uint8_t(i * 131 + seed + (i >> 11));
    return v;
  }

  TlsConfig server_tls_config_, client_tls_config_;
  EndpointConfig endpoint_config_;
  TransportConfig client_transport_;
  std::unique_ptr<TlsContext> server_tls_, client_tls_;
  std::unique_ptr<ServerEndpoint> endpoint_;
  std::unique_ptr<Connection> client_;
  Recorder client_events_, server_events_;
  Connection* server_conn_ = nullptr;
};

}  // namespace qbridge::quic
