// qbridge's south listener (a worker core and the controlplane core on their own threads,
// kernel UDP on loopback) against a client on an independent stack (@matrixai/quic +
// mqtt-packet) that behaves like NanoMQ's bridge: CONNECT on stream 0, QoS 0 on streams 12
// and 16, never a PINGREQ (mqtt-over-quic.md 3). Real time: keepalive 1 s.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/quic_test_util.h"
#include "tests/support/socket_host.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_certs.h"

#ifndef QBRIDGE_SOURCE_DIR
#error "QBRIDGE_SOURCE_DIR must be defined"
#endif

namespace qbridge::testing {
namespace {

const std::string kInterop = std::string(QBRIDGE_SOURCE_DIR) + "/tests/interop";

class SouthKeepaliveInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/node", X_OK) != 0 && ::access("/usr/local/bin/node", X_OK) != 0)
      GTEST_SKIP() << "node is not installed (tools/setup.sh installs it)";
    ASSERT_TRUE(std::filesystem::exists(kInterop + "/node_modules/mqtt-packet"))
        << "run tools/test.sh (it installs tests/interop's npm packages)";
    auto s = quic::TlsContext::Create(quic::TlsContext::Side::kServer, ServerTlsConfig());
    ASSERT_TRUE(s.ok()) << s.status();
    tls_ = std::move(*s);
  }

  // Runs the client for `seconds` against a host in the given mode; returns its verdict.
  nlohmann::json RunClient(SocketHost& host, int seconds, int proto) {
    const auto& certs = GetTestCerts();
    Subprocess node;
    EXPECT_TRUE(node.Start({"node", kInterop + "/nanomq_like_client.mjs", "--port",
                            std::to_string(host.port()), "--ca", certs.ca, "--server-name",
                            "localhost", "--keepalive", "1", "--seconds", std::to_string(seconds),
                            "--proto", std::to_string(proto)},
                           certs.dir + "/nanomq-like.log"));
    std::string verdict;
    for (std::string line; (line = node.ReadLine((seconds + 20) * 1000)) != "";) {
      if (line.rfind("{", 0) == 0) {
        verdict = line;
        break;
      }
    }
    std::ifstream log(certs.dir + "/nanomq-like.log");
    const std::string err((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    EXPECT_FALSE(verdict.empty()) << err;
    return verdict.empty() ? nlohmann::json::object() : nlohmann::json::parse(verdict);
  }

  dp::WorkerConfig Worker() {
    dp::WorkerConfig w;
    w.server_tls = tls_.get();
    w.endpoint.transport.idle_timeout_ns = 30 * quic::kSecond;
    return w;
  }

  std::unique_ptr<quic::TlsContext> tls_;
};

// Connection-scope keepalive (EMQX >= 5.8.2): data-stream QoS 0 keeps the client connected
// for 10 x keepalive without a single PINGREQ.
TEST_F(SouthKeepaliveInterop, NanoLikeClientStaysConnectedForTenKeepalives) {
  SocketHost host(Worker(), cp::ControlplaneConfig{});
  ASSERT_TRUE(host.ok());
  const nlohmann::json v = RunClient(host, 10, 4);
  host.Stop();
  EXPECT_EQ(v.value("connack", -1), 0) << v.dump();
  EXPECT_FALSE(v.value("closed", true)) << v.dump();
  EXPECT_GE(v.value("published", 0), 80) << v.dump();
  EXPECT_EQ(host.controlplane().south().keepalive_timeouts, 0u);
  EXPECT_EQ(host.controlplane().south().pingreqs, 0u);
  EXPECT_EQ(host.controlplane().sessions(), 1u);
  // Every publish that left the client before the verdict arrived.
  EXPECT_GE(host.worker().stats().publish_in.Get() + 2, uint64_t(v.value("published", 0)));
}

// strict_control_stream_keepalive (EMQX <= 5.8.1): the same client is closed at
// 1.5 x keepalive with DISCONNECT 0x8D on the control stream.
TEST_F(SouthKeepaliveInterop, StrictModeDisconnectsTheSameClientWithKeepaliveTimeout) {
  cp::ControlplaneConfig cc;
  cc.south.strict_control_stream_keepalive = true;
  SocketHost host(Worker(), cc);
  ASSERT_TRUE(host.ok());
  const nlohmann::json v = RunClient(host, 4, 5);
  host.Stop();
  EXPECT_EQ(v.value("connack", -1), 0) << v.dump();
  EXPECT_TRUE(v.value("closed", false)) << v.dump();
  EXPECT_EQ(v.value("disconnectReason", -1), 0x8D) << v.dump();
  const int after = v.value("closedAfterMs", 0);
  EXPECT_GE(after, 1400) << v.dump();  // 1.5 s after CONNACK, less the CONNACK's trip
  EXPECT_LE(after, 2600) << v.dump();
  EXPECT_EQ(host.controlplane().south().keepalive_timeouts, 1u);
}

}  // namespace
}  // namespace qbridge::testing

namespace qbridge::testing {
namespace {

// EMQX's multi-stream model from an independent client (@matrixai/quic + mqtt-packet):
// SUBACK and deliveries on the subscribing stream, PUBACK on the publishing stream,
// UNSUBSCRIBE from a third stream answered 0x11.
TEST_F(SouthKeepaliveInterop, MultiStreamAcksAndSubscriptionsFollowTheStream) {
  SocketHost host(Worker(), cp::ControlplaneConfig{});
  ASSERT_TRUE(host.ok());
  const auto& certs = GetTestCerts();
  Subprocess node;
  ASSERT_TRUE(node.Start({"node", kInterop + "/multistream_client.mjs", "--port",
                          std::to_string(host.port()), "--ca", certs.ca},
                         certs.dir + "/multistream.log"));
  const std::string line = node.ReadLine(30000);
  const int status = node.Wait(5000);
  host.Stop();
  std::ifstream log(certs.dir + "/multistream.log");
  const std::string err((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  ASSERT_EQ(status, 0) << line << err;
  const nlohmann::json v = nlohmann::json::parse(line);
  const auto& seen = v["seen"];
  ASSERT_EQ(seen["0"][0]["cmd"], "connack") << line;
  EXPECT_EQ(seen["0"].size(), 1u) << line;
  ASSERT_EQ(seen["4"][0]["cmd"], "suback") << line;
  EXPECT_EQ(seen["4"][0]["granted"][0], 1) << line;
  ASSERT_EQ(seen["4"].size(), 2u) << line;
  EXPECT_EQ(seen["4"][1]["cmd"], "publish");
  EXPECT_EQ(seen["4"][1]["topic"], "ms/x");
  EXPECT_EQ(seen["4"][1]["payload"], "hello");
  ASSERT_EQ(seen["8"].size(), 1u) << line;
  EXPECT_EQ(seen["8"][0]["cmd"], "puback");
  ASSERT_EQ(seen["12"].size(), 1u) << line;
  EXPECT_EQ(seen["12"][0]["cmd"], "unsuback");
  EXPECT_EQ(seen["12"][0]["granted"][0], 0x11) << line;
}

}  // namespace
}  // namespace qbridge::testing
