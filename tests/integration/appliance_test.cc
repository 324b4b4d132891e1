// The real `qbridge` binary, twice: an edge appliance bridging over QUIC to a cloud
// appliance that counts control-stream packets only for keepalive (EMQX <= 5.8.1), with
// qbench devices on both sides, REST and /metrics checked over HTTP.
#include <gtest/gtest.h>
#include <httplib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/mqtt_tcp_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_certs.h"

#ifndef QBRIDGE_BIN
#error "QBRIDGE_BIN and QBENCH_BIN must be defined"
#endif

namespace qbridge::testing {
namespace {

using nlohmann::json;

// 60 s is what the appliance issue asks for; QBRIDGE_SOAK_SECONDS changes it.
int SoakSeconds() {
  const char* v = std::getenv("QBRIDGE_SOAK_SECONDS");
  return v ? std::max(5, std::atoi(v)) : 60;
}

struct Appliance {
  Subprocess proc;
  int quic_port = 0, http_port = 0;
  std::string http_host = "127.0.0.1";
  std::string log;

  bool Start(const std::string& config, const std::string& log_path) {
    log = log_path;
    if (!proc.Start({QBRIDGE_BIN, "--config", config}, log_path)) return false;
    const std::string line = proc.ReadLine(15000);
    if (line.empty()) return false;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) return false;
    quic_port = j.value("quic_port", 0);
    http_port = j.value("http_port", 0);
    return quic_port > 0;
  }
  std::string Log() const {
    std::ifstream f(log);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  httplib::Client Http(bool auth = true) const {
    httplib::Client c(http_host, http_port);
    c.set_read_timeout(5, 0);
    if (auth) c.set_basic_auth("admin", "s3cret");
    return c;
  }
  json Get(const std::string& path) const {
    auto c = Http();
    auto r = c.Get(path);
    if (!r || r->status != 200) return json();
    return json::parse(r->body, nullptr, false);
  }
};

class ApplianceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartPair(/*dpdk=*/false); }

  // The cloud on kernel UDP; the edge on kernel UDP, or on the DPDK backend with a net_tap
  // port whose kernel side (198.18.<n>.1) is where the cloud and the devices live. With
  // `v6` (kernel UDP only) everything, REST included, is on ::1.
  void StartPair(bool dpdk, int edge_workers = 1, bool v6 = false) {
    const TestCerts& certs = GetTestCerts();
    ASSERT_FALSE(certs.dir.empty());
    dir_ = certs.dir + "/appliance-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    ca_ = certs.ca;
    const int subnet = 100 + int(::getpid() % 100);
    const std::string tap = "qbapp" + std::to_string(::getpid() % 100000);
    const std::string loopback = v6 ? "[::1]" : "127.0.0.1";
    kernel_ip_ = dpdk ? "198.18." + std::to_string(subnet) + ".1" : loopback;
    edge_ip_ = dpdk ? "198.18." + std::to_string(subnet) + ".2" : loopback;
    cloud_.http_host = edge_.http_host = v6 ? "::1" : "127.0.0.1";
    // With DPDK the cloud binds the TAP's kernel address, which exists only once the edge
    // runs: its port is chosen now.
    int cloud_port = 0;
    if (dpdk) {
      const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(a);
      ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
      cloud_port = ntohs(a.sin_port);
      ::close(fd);
    }
    Write("cloud.toml", R"(
[listeners.quic]
bind = ")" + kernel_ip_ + ":" + std::to_string(cloud_port) + R"("
certfile = ")" + certs.server_cert + R"("
keyfile = ")" + certs.server_key + R"("
strict_control_stream_keepalive = true

[http_server]
bind = ")" + loopback + R"(:0"
username = "admin"
password = "s3cret"
)");
    if (!dpdk) {
      ASSERT_TRUE(cloud_.Start(dir_ + "/cloud.toml", dir_ + "/cloud.log")) << cloud_.Log();
      cloud_port = cloud_.quic_port;
    }
    const std::string dataplane =
        dpdk ? "[dataplane]\nbackend = \"dpdk\"\neal_args = [\"--no-huge\", \"--no-pci\", "
               "\"--no-shconf\", \"-m\", \"256\", \"--file-prefix=qbapp"  // fixed: EAL leaves its directory
               "\", \"--vdev=net_tap0,iface=" + tap + "\"]\naddress = \"" + edge_ip_ + "/24\"\nworkers = " +
                   std::to_string(edge_workers) + "\n"
             : "";
    Write("edge.toml", dataplane + R"(
[listeners.quic]
bind = ")" + edge_ip_ + (dpdk ? ":14568" : ":0") + R"("
certfile = ")" + certs.server_cert + R"("
keyfile = ")" + certs.server_key + R"("

[http_server]
bind = ")" + loopback + R"(:0"
username = "admin"
password = "s3cret"

[bridges.mqtt.cloud]
server = "mqtt-quic://)" + kernel_ip_ + ":" + std::to_string(cloud_port) + R"("
proto_ver = 5
clientid = "edge-t"
keepalive = "2s"
backoff_max = "2s"
quic_keepalive = "4s"
quic_idle_timeout = "10s"
quic_handshake_timeout = "3s"
ssl = { cacertfile = ")" + certs.ca + R"(", server_name = "localhost" }
data_streams = 2
forwards = [
  { local_topic = "telemetry/#", remote_topic = "", prefix = "edge/", qos = 1, stream = 0 },
  { local_topic = "bulk/#", remote_topic = "", prefix = "edge/", qos = 0, stream = 1 },
]
subscription = [{ remote_topic = "cmd/edge-t/#", local_topic = "", prefix = "down/", qos = 1 }]
)");
    ASSERT_TRUE(edge_.Start(dir_ + "/edge.toml", dir_ + "/edge.log")) << edge_.Log();
    if (dpdk) {
      ASSERT_EQ(std::system(("ip addr replace " + kernel_ip_ + "/24 dev " + tap + " && ip link set " + tap +
                             " up").c_str()),
                0);
      ASSERT_TRUE(cloud_.Start(dir_ + "/cloud.toml", dir_ + "/cloud.log")) << cloud_.Log();
    }
    // Wait for the bridge.
    for (int i = 0; i < 150; ++i) {
      json b = edge_.Get("/api/v4/bridges/cloud");
      if (b.is_object() && b["data"].value("connected", false)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "the bridge did not connect\n" << edge_.Log() << cloud_.Log();
  }

  void TearDown() override {
    edge_.proc.Signal(SIGTERM);
    cloud_.proc.Signal(SIGTERM);
    EXPECT_EQ(edge_.proc.Wait(10000), 0) << "SIGTERM must drain and exit 0\n" << edge_.Log();
    EXPECT_EQ(cloud_.proc.Wait(10000), 0) << cloud_.Log();
  }

  void Soak(const char* backend, int secs = SoakSeconds()) {
  const std::string cloud = kernel_ip_ + ":" + std::to_string(cloud_.quic_port);
  const std::string edge = edge_ip_ + ":" + std::to_string(edge_.quic_port);
  auto sub1 = Bench({"sub", "--server", cloud, "--ca", ca_, "--topic", "edge/telemetry/#", "--qos", "1",
                     "--seconds", std::to_string(secs + 6)}, "sub1");
  auto sub0 = Bench({"sub", "--server", cloud, "--ca", ca_, "--topic", "edge/bulk/#", "--qos", "0",
                     "--seconds", std::to_string(secs + 6)}, "sub0");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // subscriptions in place
  auto pub1 = Bench({"pub", "--server", edge, "--ca", ca_, "--topic", "telemetry/line-1", "--qos", "1",
                     "--rate", "1000", "--size", "256", "--seconds", std::to_string(secs)}, "pub1");
  auto pub0 = Bench({"pub", "--server", edge, "--ca", ca_, "--topic", "bulk/line-1", "--qos", "0",
                     "--rate", "3000", "--size", "1024", "--streams", "2", "--seconds",
                     std::to_string(secs)}, "pub0");
  const json p1 = Summary(*pub1, (secs + 20) * 1000);
  const json p0 = Summary(*pub0, 20000);
  const json s1 = Summary(*sub1, 20000);
  const json s0 = Summary(*sub0, 20000);
  auto logs = [&] {
    std::string out;
    for (const char* n : {"pub1", "pub0", "sub1", "sub0"}) {
      std::ifstream f(dir_ + "/" + n + ".log");
      std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      out += std::string("--- ") + n + ".log (tail)\n" + text.substr(text.size() > 1500 ? text.size() - 1500 : 0);
    }
    return out + "--- edge\n" + edge_.Log() + "--- cloud\n" + cloud_.Log();
  };
  ASSERT_TRUE(p1.value("connected", false)) << p1.dump() << logs();
  ASSERT_TRUE(s1.value("subscribed", false)) << s1.dump() << logs();
  const uint64_t sent = p1.value("sent", 0ull);
  EXPECT_GT(sent, uint64_t(secs) * 900) << p1.dump();
  EXPECT_EQ(p1.value("acked", 0ull), sent) << p1.dump();
  EXPECT_EQ(p1.value("ack_failed", 1ull), 0u) << p1.dump();
  // QoS 1 end to end: every message once, in order (sequence-checked by the subscriber).
  EXPECT_EQ(s1.value("received", 0ull), sent) << s1.dump();
  EXPECT_EQ(s1.value("duplicates", 1ull), 0u) << s1.dump();
  EXPECT_EQ(s1.value("missing", 1ull), 0u) << s1.dump();
  EXPECT_EQ(s1.value("reordered", 1ull), 0u) << s1.dump();
  EXPECT_GT(s0.value("received", 0ull), 0u) << s0.dump();

  const json b = edge_.Get("/api/v4/bridges/cloud")["data"];
  ASSERT_TRUE(b.is_object());
  const json& ka = b["keepalive_health"];
  EXPECT_EQ(b.value("reconnects", 1), 0) << b.dump(2);
  EXPECT_EQ(ka.value("pingresp_timeouts", 1), 0) << b.dump(2);
  EXPECT_LT(ka.value("max_pingreq_gap_ms", 1e9), 2000.0) << b.dump(2);
  EXPECT_GE(ka.value("pingreqs_sent", 0), secs / 2) << b.dump(2);
  EXPECT_EQ(ka.value("keepalive_kicks", 1), 0);
  const json m = cloud_.Get("/api/v4/metrics")["data"]["south"];
  EXPECT_EQ(m.value("keepalive_timeouts", 1), 0) << m.dump();
  EXPECT_LE(ka.value("pingresp_rtt_p99_ms_at_most", 1e9), 1000.0) << b.dump(2);
  std::printf("soak (%s) %d s: QoS 1 %lu msgs (p99 %.2f ms), QoS 0 %lu of %lu delivered; PINGREQs %d, "
              "max gap %.1f ms, PINGRESP RTT max %.2f ms, p99 <= %.0f ms\n",
              backend, secs, (unsigned long)sent, s1.value("latency_p99_ms", 0.0),
              (unsigned long)s0.value("received", 0ull), (unsigned long)p0.value("sent", 0ull),
              ka.value("pingreqs_sent", 0), ka.value("max_pingreq_gap_ms", 0.0),
              ka.value("pingresp_rtt_max_ms", 0.0), ka.value("pingresp_rtt_p99_ms_at_most", 0.0));
  if (std::getenv("QBRIDGE_SOAK_LOGS")) std::printf("%s\nbridge: %s\n", logs().c_str(), b.dump().c_str());
  // Where the edge's datagrams went: per worker, and what steering moved between workers.
  const json em = edge_.Get("/api/v4/metrics")["data"];
  for (size_t w = 0; em.is_object() && em["workers"].contains("rx_datagrams{worker=\"" + std::to_string(w) + "\"}"); ++w) {
    const std::string k = "{worker=\"" + std::to_string(w) + "\"}";
    std::printf("  edge worker %zu: rx_datagrams %lu, cid_forwarded %lu, cid_received %lu\n", w,
                (unsigned long)em["workers"].value("rx_datagrams" + k, 0ull),
                (unsigned long)em["workers"].value("cid_forwarded" + k, 0ull),
                (unsigned long)em["workers"].value("cid_received" + k, 0ull));
  }
  if (em.is_object() && em["workers"].is_object()) {
    for (const auto& [k, v] : em["workers"].items()) {
      if (v.is_number() && v.get<uint64_t>() > 0 &&
          (k.find("drop") != std::string::npos || k.find("routed") != std::string::npos)) {
        std::printf("  edge %s %lu\n", k.c_str(), (unsigned long)v.get<uint64_t>());
      }
    }
  }
  const json cm = cloud_.Get("/api/v4/metrics")["data"];
  if (std::getenv("QBRIDGE_SOAK_LOGS") && cm.is_object()) std::printf("cloud metrics: %s\n", cm.dump().c_str());
  if (em.is_object() && em["backend"].is_object()) {
    for (const auto& [k, v] : em["backend"].items()) {
      if (v.is_number() && v.get<uint64_t>() > 0 &&
          (k.find("drop") != std::string::npos || k.find("rx_packets") != std::string::npos ||
           k.find("neighbours") != std::string::npos || k.find("offloaded") != std::string::npos)) {
        std::printf("  edge %s %lu\n", k.c_str(), (unsigned long)v.get<uint64_t>());
      }
    }
  }
}

  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }

  // Runs qbench; returns its JSON summary.
  std::unique_ptr<Subprocess> Bench(const std::vector<std::string>& args, const std::string& name) {
    auto p = std::make_unique<Subprocess>();
    std::vector<std::string> argv = {QBENCH_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    EXPECT_TRUE(p->Start(argv, dir_ + "/" + name + ".log"));
    return p;
  }
  static json Summary(Subprocess& p, int timeout_ms) {
    const std::string line = p.ReadLine(timeout_ms);
    return json::parse(line.empty() ? "{}" : line, nullptr, false);
  }

  std::string dir_, ca_;
  std::string kernel_ip_ = "127.0.0.1", edge_ip_ = "127.0.0.1";
  Appliance cloud_, edge_;
};

// The issue's soak: bulk QoS 0 and QoS 1 through the edge to the cloud on data streams, with
// keepalive 2 s against a cloud that only counts the control stream. Zero reconnects, every
// PINGREQ gap under 2 s, every QoS 1 message delivered exactly once, in order.
TEST_F(ApplianceTest, BridgeKeepsKeepaliveUnderBulkLoad) { Soak("socket"); }

// IPv6: edge and cloud, their listeners, the bridge and REST on ::1 (kernel UDP), a shorter
// run of the same checks.
class ApplianceV6Test : public ApplianceTest {
 protected:
  void SetUp() override {
    if (!HasIpv6Loopback()) GTEST_SKIP() << "no ::1 on this host";
    StartPair(/*dpdk=*/false, /*edge_workers=*/1, /*v6=*/true);
  }
};

TEST_F(ApplianceV6Test, BridgeOverIpv6Loopback) {
  Soak("socket, IPv6", 5);
  EXPECT_NE(edge_.Log().find("MQTT over QUIC on [::1]:"), std::string::npos) << edge_.Log();
  EXPECT_NE(edge_.Log().find("-> mqtt-quic://[::1]:" + std::to_string(cloud_.quic_port)), std::string::npos)
      << edge_.Log();
  EXPECT_NE(edge_.Log().find("REST on http://[::1]:"), std::string::npos) << edge_.Log();
}

// The same with the edge on the DPDK backend (net_tap): root only.
class ApplianceDpdkTest : public ApplianceTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "not root: net_tap needs CAP_NET_ADMIN";
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun is missing";
    // Two workers: two queue pairs on the TAP, which the kernel fills by flow hash, so CID
    // and bridge-port steering between the workers carry part of the traffic.
    StartPair(/*dpdk=*/true, /*edge_workers=*/2);
  }
};

TEST_F(ApplianceDpdkTest, BridgeKeepsKeepaliveUnderBulkLoadOnDpdk) { Soak("dpdk over net_tap"); }

// qbench as a load generator: 200 device connections (QUIC, QoS 1, one topic each) into the
// edge, through the bridge, to one subscriber on the cloud. Its JSON accounts for every
// message: what the publishers had acknowledged arrived once each, per publisher in order.
TEST_F(ApplianceTest, QbenchFanInOf200ConnectionsIsAllAccounted) {
  const std::string cloud = kernel_ip_ + ":" + std::to_string(cloud_.quic_port);
  const std::string edge = edge_ip_ + ":" + std::to_string(edge_.quic_port);
  auto sub = Bench({"sub", "--server", cloud, "--ca", ca_, "--topic", "edge/telemetry/#", "--qos", "1",
                    "--seconds", "60", "--quiet", "3"}, "fanin-sub");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // subscription in place
  auto pub = Bench({"pub", "--server", edge, "--ca", ca_, "--topic", "telemetry/dev-%i", "--qos", "1",
                    "--conns", "200", "--ramp", "500", "--rate", "4000", "--keepalive", "2", "--seconds", "4"},
                   "fanin-pub");
  const json p = Summary(*pub, 60000);
  const json s = Summary(*sub, 60000);
  ASSERT_TRUE(p.is_object() && s.is_object()) << p.dump() << s.dump();
  EXPECT_TRUE(p.value("connected", false)) << p.dump();
  EXPECT_EQ(p.value("connects", 0), 200) << p.dump();
  EXPECT_EQ(p.value("reconnects", 1), 0) << p.dump();
  const uint64_t sent = p.value("sent", 0ull);
  EXPECT_GT(sent, 4000u * 3) << p.dump();
  EXPECT_EQ(p.value("acked", 0ull), sent) << p.dump();
  EXPECT_EQ(p.value("ack_failed", 1), 0) << p.dump();
  // Keepalive 2 s: every connection pinged and was answered.
  EXPECT_GE(p.value("pings", 0), 200) << p.dump();
  EXPECT_EQ(p.value("ping_timeouts", 1), 0) << p.dump();
  EXPECT_TRUE(p["series"].is_array() && p["series"].size() >= 4) << p.dump();

  EXPECT_TRUE(s.value("subscribed", false)) << s.dump();
  EXPECT_EQ(s.value("publishers_seen", 0), 200) << s.dump();
  EXPECT_EQ(s.value("received", 0ull), sent) << s.dump();
  EXPECT_EQ(s.value("unique", 0ull), sent) << s.dump();
  EXPECT_EQ(s.value("missing", 1), 0) << s.dump();
  EXPECT_EQ(s.value("duplicates", 1), 0) << s.dump();
  EXPECT_EQ(s.value("reordered", 1), 0) << s.dump();
  EXPECT_EQ(s["latency"].value("count", 0ull), sent) << s.dump();
  uint64_t per_second = 0;
  for (const json& e : s["series"]) per_second += e.value("received", 0ull);
  EXPECT_EQ(per_second, sent) << "the per-second series must add up to the total";
  const json b = edge_.Get("/api/v4/bridges/cloud")["data"];
  EXPECT_EQ(b.value("reconnects", 1), 0) << b.dump(2);
  std::printf("qbench fan-in: 200 connections, %lu QoS 1 messages, transit p99 %.2f ms, ramp %.2f s\n",
              (unsigned long)sent, s.value("latency_p99_ms", 0.0), p.value("ramp_seconds", 0.0));
}

TEST_F(ApplianceTest, RestAndMetrics) {
  // No credentials, wrong credentials.
  {
    auto c = edge_.Http(false);
    auto r = c.Get("/api/v4/bridges");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Basic realm=\"qbridge\"");
    c.set_basic_auth("admin", "guess");
    r = c.Get("/metrics");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
  }
  json list = edge_.Get("/api/v4/bridges");
  ASSERT_TRUE(list.is_object());
  EXPECT_EQ(list["code"], 0);
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["name"], "cloud");
  json one = edge_.Get("/api/v4/bridges/cloud")["data"];
  EXPECT_EQ(one["forwards"].size(), 2u);
  EXPECT_EQ(one["forwards"][0]["local_topic"], "telemetry/#");
  EXPECT_EQ(one["subscription"][0]["remote_topic"], "cmd/edge-t/#");
  EXPECT_TRUE(one["keepalive_health"].contains("control_stream_idle_ms"));
  EXPECT_TRUE(one["keepalive_health"].contains("pingresp_rtt_p99_ms_at_most"));
  {
    auto c = edge_.Http();
    auto r = c.Get("/api/v4/bridges/nope");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    // Bad bodies: 400 with a JSON error.
    for (const char* body : {"", "{", "[]", "{\"enable\": \"yes\"}", "{\"on\": true}"}) {
      r = c.Post("/api/v4/bridges/switch/cloud", body, "application/json");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 400) << body;
      json e = json::parse(r->body, nullptr, false);
      EXPECT_TRUE(e.is_object() && e.contains("message")) << r->body;
    }
    // Switch the bridge off and on again.
    r = c.Post("/api/v4/bridges/switch/cloud", "{\"enable\": false}", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  bool down = false;
  for (int i = 0; i < 50 && !down; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    down = !edge_.Get("/api/v4/bridges/cloud")["data"].value("connected", true);
  }
  EXPECT_TRUE(down);
  // QoS 0 for a bridge that is down is dropped, and counted under its reason.
  {
    auto pub = Bench({"pub", "--server", edge_ip_ + ":" + std::to_string(edge_.quic_port), "--ca", ca_,
                      "--topic", "bulk/while-down", "--qos", "0", "--rate", "20", "--seconds", "1"},
                     "pub-down");
    const json p = Summary(*pub, 15000);
    EXPECT_GT(p.value("sent", 0ull), 0u) << p.dump();
    json t;  // REST's view is refreshed every 200 ms
    for (int i = 0; i < 30; ++i) {
      t = edge_.Get("/api/v4/bridges/cloud")["data"]["traffic"];
      if (t.is_object() && t["drops_by_reason"].value("bridge_down", 0ull) == p.value("sent", 0ull)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(t["drops_by_reason"].value("bridge_down", 0ull), p.value("sent", 0ull)) << t.dump();
    EXPECT_EQ(t.value("drops", 0ull), p.value("sent", 0ull)) << t.dump();
  }
  {
    auto c = edge_.Http();
    auto r = c.Post("/api/v4/bridges/switch/cloud", "{\"enable\": true}", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    up = edge_.Get("/api/v4/bridges/cloud")["data"].value("connected", false);
  }
  EXPECT_TRUE(up);

  // The cloud sees the edge as a client.
  json clients = cloud_.Get("/api/v4/clients");
  bool found = false;
  for (const auto& c : clients["data"]) found |= c["client_id"] == "edge-t";
  EXPECT_TRUE(found) << clients.dump();

  // Prometheus text with the per-bridge series NanoMQ lacks.
  auto c = edge_.Http();
  auto r = c.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  for (const char* series :
       {"qbridge_bridge_connected{bridge=\"cloud\"} 1", "qbridge_bridge_reconnects_total{bridge=\"cloud\"} 1",
        "qbridge_bridge_pingreqs_total{bridge=\"cloud\"}", "qbridge_bridge_pingresp_rtt_seconds{bridge=\"cloud\"}",
        "qbridge_bridge_control_stream_idle_seconds{bridge=\"cloud\"}",
        "qbridge_bridge_pingresp_rtt_histogram_seconds_bucket{bridge=\"cloud\",le=\"+Inf\"}",
        "qbridge_bridge_closes_total{bridge=\"cloud\",app_error=\"0\"} 1",
        "qbridge_bridge_tx_messages_total{bridge=\"cloud\"}", "qbridge_worker_rx_datagrams{worker=\"0\"}",
        "qbridge_bridge_drops_total{bridge=\"cloud\",reason=\"queue_full\"} 0",
        "qbridge_bridge_drops_total{bridge=\"cloud\",reason=\"bridge_down\"} ",
        "# TYPE qbridge_bridge_connected gauge"}) {
    EXPECT_NE(r->body.find(series), std::string::npos) << "missing " << series << "\n" << r->body;
  }
  // Per-core loop figures are filled in.
  const size_t at = r->body.find("qbridge_worker_max_loop_ns{worker=\"0\"} ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(std::stoull(r->body.substr(at + std::strlen("qbridge_worker_max_loop_ns{worker=\"0\"} "))), 0u);
  json metrics = edge_.Get("/api/v4/metrics");
  EXPECT_EQ(metrics["code"], 0);
  EXPECT_TRUE(metrics["data"]["workers"].contains("rx_datagrams{worker=\"0\"}"));
}

// SIGHUP adds a QUIC bridge to a running edge: it dials from the worker's bridge socket,
// connects, and the first bridge keeps its connection.
// The bridge sockets are bound to the wildcard addresses (any interface): a datagram to one
// that no bridge connection takes must not reach the server endpoint, or they would be a
// second, unrestricted listener. A QUIC client dialling a bridge port gets no session.
TEST_F(ApplianceTest, BridgeSocketsAreNoSecondListener) {
  FILE* ss = ::popen(("ss -Huanp 2>/dev/null | grep 'pid=" + std::to_string(edge_.proc.pid()) + ",'").c_str(), "r");
  ASSERT_NE(ss, nullptr);
  std::vector<int> ports;
  char line[512];
  while (std::fgets(line, sizeof(line), ss)) {
    // "UNCONN 0 0 127.0.0.1:43951 0.0.0.0:* users:(...)": the 4th field is the local address.
    std::istringstream fields(line);
    std::string state, recvq, sendq, local;
    fields >> state >> recvq >> sendq >> local;
    const size_t colon = local.rfind(':');
    const int port = colon == std::string::npos ? 0 : std::atoi(local.c_str() + colon + 1);
    if (port > 0 && port != edge_.quic_port) ports.push_back(port);
  }
  ::pclose(ss);
  ASSERT_FALSE(ports.empty()) << "no bridge socket found";
  for (int port : ports) {
    auto pub = Bench({"pub", "--server", "127.0.0.1:" + std::to_string(port), "--ca", ca_, "--topic",
                      "telemetry/x", "--qos", "1", "--rate", "10", "--seconds", "2"},
                     "probe" + std::to_string(port));
    const json r = Summary(*pub, 20000);
    EXPECT_FALSE(r.value("connected", true)) << "bridge port " << port << ": " << r.dump();
  }
  const json em = edge_.Get("/api/v4/metrics")["data"]["workers"];
  EXPECT_GT(em.value("drop_no_conn{worker=\"0\"}", 0), 0) << em.dump();
  EXPECT_TRUE(edge_.Get("/api/v4/bridges/cloud")["data"].value("connected", false));
}

TEST_F(ApplianceTest, SighupAddsAQuicBridge) {
  std::ifstream in(dir_ + "/edge.toml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = text.find("[bridges.mqtt.cloud]");
  ASSERT_NE(at, std::string::npos);
  std::string second = text.substr(at);
  second.replace(0, std::strlen("[bridges.mqtt.cloud]"), "[bridges.mqtt.cloud2]");
  second.replace(second.find("edge-t"), std::strlen("edge-t"), "edge-t2");
  Write("edge.toml", text + "\n" + second);
  edge_.proc.Signal(SIGHUP);
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const json b = edge_.Get("/api/v4/bridges/cloud2");  // 404 (null) until the reload ran
    up = b.is_object() && b["data"].is_object() && b["data"].value("connected", false);
  }
  EXPECT_TRUE(up) << edge_.Log();
  EXPECT_EQ(edge_.Get("/api/v4/bridges")["data"].size(), 2u);
  EXPECT_EQ(edge_.Get("/api/v4/bridges/cloud")["data"].value("reconnects", 1), 0) << edge_.Log();
}

TEST(ApplianceCli, CheckConfigExplainsByKeyPath) {
  const std::string dir = GetTestCerts().dir;
  const std::string bad = dir + "/bad-" + std::to_string(::getpid()) + ".toml";
  std::ofstream(bad) << "[bridges.mqtt.x]\nserver = \"mqtt-quic://127.0.0.1:1\"\nkeepalive = \"90s\"\n"
                        "quic_idle_timeout = \"120s\"\nquic_keepalive = \"30s\"\nssl = { verify_peer = false }\n";
  Subprocess p;
  ASSERT_TRUE(p.Start({QBRIDGE_BIN, "--check-config", bad}, bad + ".err"));
  EXPECT_EQ(p.Wait(10000), 1);
  std::ifstream f(bad + ".err");
  const std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find("bridges.mqtt.x.keepalive x 1.5"), std::string::npos) << err;
  EXPECT_NE(err.find("bridges.mqtt.x.quic_idle_timeout"), std::string::npos) << err;
}

}  // namespace
}  // namespace qbridge::testing
