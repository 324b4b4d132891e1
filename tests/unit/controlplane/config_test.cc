#include "controlplane/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "tests/support/test_certs.h"

#ifndef QBRIDGE_SOURCE_DIR
#error "QBRIDGE_SOURCE_DIR must be defined"
#endif

namespace qbridge::cp {
namespace {

constexpr uint64_t kS = dp::kSecNs;
const std::string kConfigs = std::string(QBRIDGE_SOURCE_DIR) + "/configs";

// QBRIDGE_CERTS as tools/run.sh sets it: a directory with server.pem, server.key, ca.pem.
void PointCertsAtTestCerts() {
  const auto& c = testing::GetTestCerts();
  const std::string dir = c.dir + "/demo";
  std::filesystem::create_directories(dir);
  for (auto [from, to] : {std::pair{c.server_cert, "server.pem"}, {c.server_key, "server.key"}, {c.ca, "ca.pem"}}) {
    std::filesystem::remove(dir + "/" + to);
    std::filesystem::create_symlink(from, dir + "/" + to);
  }
  ::setenv("QBRIDGE_CERTS", dir.c_str(), 1);
}

TEST(Config, EveryFileInConfigsLoads) {
  PointCertsAtTestCerts();
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(kConfigs)) {
    if (e.path().extension() != ".toml") continue;
    ++seen;
    // The EMQX example names production paths and a public host: check its syntax and
    // rules, not the files.
    const bool example = e.path().filename() == "emqx-upstream.toml";
    auto c = LoadConfig(e.path(), example ? ConfigChecks{false, false} : ConfigChecks{});
    EXPECT_TRUE(c.ok()) << e.path() << ": " << c.status();
  }
  EXPECT_GE(seen, 3);
}

TEST(Config, DemoEdgeMapsNanoMqKeys) {
  PointCertsAtTestCerts();
  auto c = LoadConfig(kConfigs + "/demo-edge.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->control.bridges.size(), 1u);
  const BridgeConfig& b = c->control.bridges[0];
  const dp::BridgeDialSettings& d = c->runtime.bridges[0];
  EXPECT_EQ(b.name, "cloud");
  EXPECT_EQ(b.keepalive_s, 2);
  EXPECT_EQ(b.version, mqtt::Version::k5);
  EXPECT_EQ(b.client_id, "edge-demo");
  EXPECT_EQ(b.backoff_max_ns, 5 * kS);
  EXPECT_EQ(d.quic.keepalive_ns, 5 * kS);
  EXPECT_EQ(d.quic.idle_timeout_ns, 15 * kS);
  EXPECT_EQ(d.ip, "127.0.0.1");
  EXPECT_EQ(d.port, 14567);
  EXPECT_TRUE(d.tls.verify_peer);
  EXPECT_EQ(d.tls.server_name, "localhost");
  ASSERT_EQ(b.forwards.size(), 2u);
  EXPECT_EQ(b.forwards[1].local_topic, "bulk/#");
  EXPECT_EQ(b.forwards[1].qos, mqtt::QoS::k0);
  EXPECT_EQ(b.forwards[1].slot, 1);
  ASSERT_EQ(b.subscriptions.size(), 1u);
  EXPECT_EQ(b.subscriptions[0].slot, -1);  // the control stream by default
  EXPECT_EQ(d.data_streams, 2);
  ASSERT_TRUE(c->runtime.listener.has_value());
  EXPECT_EQ(c->runtime.listener->port, 14568);
}

TEST(Config, EmqxExampleValues) {
  auto c = LoadConfig(kConfigs + "/emqx-upstream.toml", ConfigChecks{false, false});
  ASSERT_TRUE(c.ok()) << c.status();
  const BridgeConfig& b = c->control.bridges[0];
  EXPECT_EQ(b.keepalive_s, 60);
  EXPECT_FALSE(b.clean_start);
  EXPECT_EQ(b.pingresp_timeout_ns, 20 * kS);
  EXPECT_EQ(c->runtime.bridges[0].quic.initial_rtt_ns, 800 * dp::kMsNs);
  EXPECT_EQ(c->runtime.bridges[0].priorities, (std::vector<int>{0, 1}));
  EXPECT_TRUE(c->runtime.bridges[0].qos0_backpressure);
  EXPECT_FALSE(c->control.south.allow_anonymous);
  EXPECT_EQ(c->runtime.listener->retry, "under_load");
}

TEST(Config, Durations) {
  EXPECT_EQ(ParseDuration("2s"), 2 * kS);
  EXPECT_EQ(ParseDuration("800ms"), 800 * dp::kMsNs);
  EXPECT_EQ(ParseDuration("2m"), 120 * kS);
  EXPECT_EQ(ParseDuration("1h"), 3600 * kS);
  EXPECT_EQ(ParseDuration("1.5s"), 1500 * dp::kMsNs);
  EXPECT_EQ(ParseDuration("10"), 10 * kS);
  EXPECT_FALSE(ParseDuration("s").has_value());
  EXPECT_FALSE(ParseDuration("5 days").has_value());
  EXPECT_FALSE(ParseDuration("-1s").has_value());
  // Bare numbers: seconds, or milliseconds for *_ms keys (NanoMQ's units).
  auto c = ParseConfig(R"(
[bridges.mqtt.b]
server = "mqtt-quic://127.0.0.1:14567"
ssl = { verify_peer = false }
keepalive = 30
quic_idle_timeout = 90
quic_keepalive = 40
quic_initial_rtt_ms = 300
quic_max_ack_delay_ms = 99999
qos0_backpressure = false
)", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->runtime.bridges[0].qos0_backpressure);
  EXPECT_EQ(c->control.bridges[0].keepalive_s, 30);
  EXPECT_EQ(c->runtime.bridges[0].quic.idle_timeout_ns, 90 * kS);
  EXPECT_EQ(c->runtime.bridges[0].quic.initial_rtt_ns, 300 * dp::kMsNs);
  EXPECT_EQ(c->runtime.bridges[0].quic.max_ack_delay_ns, 16 * kS);  // NanoMQ's clamp
  EXPECT_FALSE(c->runtime.bridges[0].tls.verify_peer);
}

// NanoMQ's TLS listener and tls+mqtt-tcp:// upstreams: its keys, its defaults (8883; no
// client certificates unless asked for), the upstream's name kept for verification.
TEST(Config, TlsListenerAndTlsTcpBridge) {
  auto c = ParseConfig(R"(
[listeners.ssl]
bind = "0.0.0.0:8883"
certfile = "/etc/qbridge/server.pem"
keyfile = "/etc/qbridge/server.key"
cacertfile = "/etc/qbridge/ca.pem"
verify_peer = true

[bridges.mqtt.cloud]
server = "tls+mqtt-tcp://broker.example"
ssl = { cacertfile = "/etc/qbridge/ca.pem" }
hybrid_bridging = true
hybrid_servers = ["mqtt-quic://broker.example:14567", "tls+mqtt-tcp://backup.example:8884"]
)", "t.toml", ConfigChecks{false, false});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->runtime.tls_listener.has_value());
  EXPECT_EQ(c->runtime.tls_listener->port, 8883);
  EXPECT_TRUE(c->runtime.tls_listener->tls.verify_peer);
  EXPECT_FALSE(c->runtime.tls_listener->fail_if_no_peer_cert);
  const auto& d = c->runtime.bridges[0];
  EXPECT_TRUE(d.tcp && d.tls_tcp);
  EXPECT_EQ(d.port, 8883);  // the scheme's default
  EXPECT_EQ(d.tls.server_name, "broker.example");
  EXPECT_STREQ(UpstreamScheme(d), "tls+mqtt-tcp");
  ASSERT_EQ(d.hybrid.size(), 2u);
  EXPECT_FALSE(d.hybrid[0].tcp);
  EXPECT_TRUE(d.hybrid[1].tcp && d.hybrid[1].tls);
  EXPECT_EQ(d.hybrid[1].port, 8884);
  // A verifying TLS upstream needs its CA (as a QUIC one does).
  auto no_ca = ParseConfig("[bridges.mqtt.b]\nserver = \"tls+mqtt-tcp://127.0.0.1\"\n", "t.toml");
  ASSERT_FALSE(no_ca.ok());
  EXPECT_NE(no_ca.status().message().find("bridges.mqtt.b.ssl.cacertfile: required"), std::string::npos)
      << no_ca.status();
}

TEST(Config, EveryProblemIsReportedByKeyPath) {
  auto c = ParseConfig(R"(
[dataplane]
backend = "kernel"
wokers = 2
worker_cpus = [1, 2]
mbufs = 10

[listeners.quic]
bind = "nowhere"

[listeners.ssl]
bind = "0.0.0.0"
fail_if_no_peer_cert = true

[http_server]
bind = "127.0.0.1:8081"

[bridges.mqtt.up]
server = "mqtt-quic://10.0.0.1:14567"
keepalive = "60s"
quic_keepalive = "120s"
quic_idle_timeout = "120s"
forwards = [{ local_topic = "a/#", remote_topic = "b/#" }]
subscription = [{ remote_topic = "c/#" }]

[bridges.mqtt.down]
server = "mqtt-quic://127.0.0.1"
keepalive = "90s"
quic_keepalive = "30s"
quic_idle_timeout = "120s"
pingresp_timeout = "2m"
)", "bad.toml", ConfigChecks{false, true});
  ASSERT_FALSE(c.ok());
  const std::string m(c.status().message());
  for (const char* want : {
           "dataplane.backend: expected \"socket\" or \"dpdk\"",
           "dataplane.wokers: unknown key",
           "dataplane.worker_cpus: has 2 entries for 1 workers (one CPU each)",
           "dataplane.mbufs:",
           "listeners.quic.bind: expected \"ip:port\"",
           "listeners.quic.certfile: required",
           "http_server.password: required",
           "listeners.ssl.bind: expected \"ip:port\"",
           "listeners.ssl.certfile: required",
           "listeners.ssl.fail_if_no_peer_cert: needs verify_peer = true",
           "bridges.mqtt.up.ssl.cacertfile: required to verify",
           "bridges.mqtt.up: bridges.mqtt.up.quic_keepalive (120000 ms) must be below "
           "bridges.mqtt.up.quic_idle_timeout",
           "bridges.mqtt.up.forwards[0]",
           "bridges.mqtt.up.subscription[0].qos: required",
           "bridges.mqtt.down: bridges.mqtt.down.keepalive x 1.5 (135000 ms) must be below "
           "bridges.mqtt.down.quic_idle_timeout",
           "bridges.mqtt.down.pingresp_timeout: must be shorter than keepalive",
       }) {
    EXPECT_NE(m.find(want), std::string::npos) << "missing: " << want << "\nin:\n" << m;
  }
}

TEST(Config, TomlSyntaxErrorsNameTheLine) {
  auto c = ParseConfig("[dataplane]\nbackend = \n", "x.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("x.toml:2"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace qbridge::cp

namespace qbridge::cp {
namespace {

// Found by config_fuzz: toml++ asserted on a broken table header instead of reporting it.
TEST(Config, BrokenTableHeaderIsAnErrorNotAnAbort) {
  auto c = ParseConfig("[= [{ local_topic = \"a/#\" }]\n", "typo.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("typo.toml:1"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace qbridge::cp

namespace qbridge::cp {
namespace {

// toml++ only ever sees ASCII (it has undefined behaviour on some non-ASCII characters):
// UTF-8 in basic strings keeps its value, anything else non-ASCII is refused by line.
TEST(Config, NonAsciiTextOnlyInStringsAndComments) {
  auto ok = ParseConfig("# température\n[bridges.mqtt.b]\nserver = \"mqtt-tcp://127.0.0.1:1883\"\n"
                        "forwards = [{ local_topic = \"température/#\", remote_topic = \"\", prefix = \"ß/\" }]\n",
                        "u.toml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->control.bridges[0].forwards[0].local_topic, "température/#");
  EXPECT_EQ(ok->control.bridges[0].forwards[0].prefix, "ß/");
  auto bare = ParseConfig("[dataplane]\nbackend\xEF\xBB\x87 = \"socket\"\n", "u.toml");
  ASSERT_FALSE(bare.ok());
  EXPECT_NE(bare.status().message().find("u.toml:2: a non-ASCII character"), std::string::npos) << bare.status();
  auto literal = ParseConfig("[http_server]\npassword = 'pässword'\n", "u.toml");
  ASSERT_FALSE(literal.ok());
  EXPECT_NE(literal.status().message().find("literal string"), std::string::npos) << literal.status();
}

}  // namespace
}  // namespace qbridge::cp
