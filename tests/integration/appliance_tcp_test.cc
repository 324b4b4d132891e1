// MQTT over TCP through the real `qbridge` binary: mosquitto as the north upstream (an
// mqtt-tcp:// bridge), mosquitto_pub / mosquitto_sub as south clients on qbridge's TCP
// listener. Messages cross both ways at QoS 0, 1 and 2 with NanoMQ's rewrite rules applied.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "tests/support/mqtt_tcp_client.h"
#include "tests/support/subprocess.h"

#ifndef QBRIDGE_BIN
#error "QBRIDGE_BIN must be defined"
#endif

namespace qbridge::testing {
namespace {

// What every appliance file here starts with: the TCP listener and REST on `host`.
std::string Header(const std::string& host = "127.0.0.1") {
  return "[listeners.tcp]\nbind = \"" + host + ":0\"\n\n[http_server]\nbind = \"" + host +
         ":0\"\nusername = \"admin\"\npassword = \"pw\"\n";
}

class ApplianceTcpTest : public ::testing::Test {
 protected:
  // A second mosquitto, listening on ::1 only (the IPv6 tests' upstream).
  static absl::StatusOr<std::unique_ptr<MosquittoBroker>> MosquittoOnIpv6Loopback() {
    MosquittoBroker::Options o;
    o.address = "::1";
    return MosquittoBroker::Start(o);
  }
  void SetUp() override {
    if (!MosquittoBroker::Available()) GTEST_SKIP() << "mosquitto is not installed (tools/setup.sh)";
    auto b = MosquittoBroker::Start();
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
    char tmpl[] = "/tmp/qbridge-tcp-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::ofstream(dir_ + "/qbridge.toml") << Header() << R"([bridges.mqtt.mosq]
server = "mqtt-tcp://127.0.0.1:)" << broker_->port() << R"("
proto_ver = 4
clientid = "qbridge-tcp-bridge"
keepalive = "5s"
forwards = [{ local_topic = "up/#", remote_topic = "", prefix = "site/", qos = 2 }]
subscription = [{ remote_topic = "cmd/#", local_topic = "#", prefix = "down/", qos = 2 }]
)";
    ASSERT_TRUE(qbridge_.Start({QBRIDGE_BIN, "--config", dir_ + "/qbridge.toml"}, dir_ + "/qbridge.log"));
    const std::string line = qbridge_.ReadLine(15000);
    auto j = nlohmann::json::parse(line.empty() ? "{}" : line, nullptr, false);
    tcp_port_ = j.value("tcp_port", 0);
    http_port_ = j.value("http_port", 0);
    ASSERT_GT(tcp_port_, 0) << Log();
    // The bridge is up once mosquitto has its subscription: wait for a retained probe.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  void TearDown() override {
    if (qbridge_.pid() > 0) {
      qbridge_.Signal(SIGTERM);
      EXPECT_EQ(qbridge_.Wait(10000), 0) << Log();
    }
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::string Log() {
    std::ifstream f(dir_ + "/qbridge.log");
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  // Runs a mosquitto client to completion; its stdout lines.
  std::vector<std::string> Run(std::vector<std::string> argv, int timeout_ms = 10000) {
    Subprocess p;
    EXPECT_TRUE(p.Start(argv, dir_ + "/client.err"));
    std::vector<std::string> out;
    for (std::string l; !(l = p.ReadLine(timeout_ms)).empty();) out.push_back(l);
    p.Wait(2000);
    return out;
  }
  std::unique_ptr<Subprocess> Spawn(std::vector<std::string> argv) {
    auto p = std::make_unique<Subprocess>();
    EXPECT_TRUE(p->Start(argv, dir_ + "/spawn.err"));
    return p;
  }
  // Another qbridge, from `toml` (its files named `name`): its TCP and REST ports (0: it
  // did not start).
  struct Extra {
    Subprocess proc;
    int tcp = 0, http = 0;
    std::string log_path;
    std::string Log() const {
      std::ifstream f(log_path);
      return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    }
  };
  void StartExtra(Extra& e, const std::string& name, const std::string& toml) {
    const std::string conf = dir_ + "/" + name + ".toml";
    std::ofstream(conf) << toml;
    e.log_path = dir_ + "/" + name + ".log";
    if (!e.proc.Start({QBRIDGE_BIN, "--config", conf}, e.log_path)) return;
    const auto j = nlohmann::json::parse(e.proc.ReadLine(15000), nullptr, false);
    e.tcp = j.value("tcp_port", 0);
    e.http = j.value("http_port", 0);
  }
  // Whether the bridge REST names at `url` connects within 10 s.
  bool BridgeComesUp(const std::string& url) {
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      auto out = Run({"curl", "-s", "-g", "-w", "\n", "-u", "admin:pw", url});
      if (!out.empty() && out[0].find("\"connected\":true") != std::string::npos) return true;
    }
    return false;
  }

  std::unique_ptr<MosquittoBroker> broker_;
  Subprocess qbridge_;
  std::string dir_;
  int tcp_port_ = 0;
  int http_port_ = 0;
};

TEST_F(ApplianceTcpTest, SouthTcpClientsToMosquittoUpstreamAndBack) {
  const std::string mosq = std::to_string(broker_->port());
  const std::string qb = std::to_string(tcp_port_);
  // North side: a subscriber on mosquitto for what the bridge forwards.
  // %q: the QoS mosquitto delivered it with, which is what the bridge sent (QoS 2 forwards).
  auto up_sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", mosq, "-t", "site/#", "-q", "2", "-F",
                       "%t %p %q", "-C", "3", "-W", "20"});
  // South side: a subscriber on qbridge for what comes down.
  auto down_sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", qb, "-t", "down/#", "-q", "2", "-v",
                         "-C", "3", "-W", "20", "-V", "mqttv5"});
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  for (int q = 0; q <= 2; ++q) {
    Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", qb, "-t", "up/line/" + std::to_string(q), "-m",
         "qos" + std::to_string(q), "-q", std::to_string(q), "-V", "mqttv311"});
  }
  for (int q = 0; q <= 2; ++q) {
    Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", mosq, "-t", "cmd/reboot/" + std::to_string(q), "-m",
         "go" + std::to_string(q), "-q", std::to_string(q)});
  }
  std::set<std::string> up, down;
  for (std::string l; !(l = up_sub->ReadLine(20000)).empty();) up.insert(l);
  for (std::string l; !(l = down_sub->ReadLine(20000)).empty();) down.insert(l);
  EXPECT_EQ(up, (std::set<std::string>{"site/up/line/0 qos0 0", "site/up/line/1 qos1 1", "site/up/line/2 qos2 2"}))
      << Log();
  // local_topic "#" under remote "cmd/#" strips "cmd/" (NanoMQ's rewrite), then the prefix.
  EXPECT_EQ(down, (std::set<std::string>{"down/reboot/0 go0", "down/reboot/1 go1", "down/reboot/2 go2"}))
      << Log();
}

}  // namespace
}  // namespace qbridge::testing

namespace qbridge::testing {
namespace {

// SIGHUP: the bridge's rules change without a reconnect (mosquitto sees one connection).
TEST_F(ApplianceTcpTest, SighupReloadsRulesWithoutReconnecting) {
  const std::string mosq = std::to_string(broker_->port());
  const std::string qb = std::to_string(tcp_port_);
  std::ofstream(dir_ + "/qbridge.toml") << Header() << R"([bridges.mqtt.mosq]
server = "mqtt-tcp://127.0.0.1:)" << broker_->port() << R"("
proto_ver = 4
clientid = "qbridge-tcp-bridge"
keepalive = "5s"
forwards = [{ local_topic = "up/#", remote_topic = "", prefix = "site2/", qos = 1 }]
subscription = [{ remote_topic = "ctl/#", local_topic = "", prefix = "down/", qos = 1 }]
)";
  qbridge_.Signal(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  auto up_sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", mosq, "-t", "site2/#", "-q", "1", "-v",
                       "-C", "1", "-W", "15"});
  auto down_sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", qb, "-t", "down/#", "-q", "1", "-v",
                         "-C", "1", "-W", "15"});
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", qb, "-t", "up/x", "-m", "new-rule", "-q", "1"});
  Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", mosq, "-t", "cmd/old", "-m", "unsubscribed", "-q", "1"});
  Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", mosq, "-t", "ctl/new", "-m", "subscribed", "-q", "1"});
  EXPECT_EQ(up_sub->ReadLine(15000), "site2/up/x new-rule") << Log();
  EXPECT_EQ(down_sub->ReadLine(15000), "down/ctl/new subscribed") << Log();
  EXPECT_NE(Log().find("reloaded"), std::string::npos) << Log();
  EXPECT_EQ(Log().find("-> mqtt-tcp", Log().find("reloaded")), std::string::npos);
  // REST shows the rules running now, not the ones the process started with.
  const auto out = Run({"curl", "-s", "-u", "admin:pw", "-w", "\n",
                        "http://127.0.0.1:" + std::to_string(http_port_) + "/api/v4/bridges/mosq"});
  ASSERT_FALSE(out.empty());
  const auto b = nlohmann::json::parse(out[0], nullptr, false)["data"];
  ASSERT_TRUE(b.is_object()) << out[0];
  EXPECT_EQ(b["forwards"][0].value("prefix", ""), "site2/") << out[0];
  EXPECT_EQ(b["subscription"][0].value("remote_topic", ""), "ctl/#") << out[0];
}

}  // namespace
}  // namespace qbridge::testing

namespace qbridge::testing {
namespace {

// SIGHUP with a bridge renamed: the old one is removed (it disconnects from mosquitto), the
// new one is added and forwards under its rule, and REST lists only the new one.
TEST_F(ApplianceTcpTest, SighupAddsAndRemovesBridges) {
  const std::string mosq = std::to_string(broker_->port());
  const std::string qb = std::to_string(tcp_port_);
  std::ofstream(dir_ + "/qbridge.toml") << Header() << R"([bridges.mqtt.fresh]
server = "mqtt-tcp://127.0.0.1:)" << broker_->port() << R"("
proto_ver = 5
clientid = "qbridge-fresh"
keepalive = "5s"
forwards = [{ local_topic = "up/#", remote_topic = "", prefix = "site3/", qos = 1 }]
)";
  qbridge_.Signal(SIGHUP);
  auto up_sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", mosq, "-t", "site3/#", "-t", "site/#", "-q",
                       "1", "-v", "-C", "1", "-W", "15"});
  // The new bridge is up once REST says so.
  const std::string url = "http://127.0.0.1:" + std::to_string(http_port_) + "/api/v4/bridges";
  nlohmann::json list;
  for (int i = 0; i < 100; ++i) {
    const auto out = Run({"curl", "-s", "-u", "admin:pw", "-w", "\n", url});
    list = nlohmann::json::parse(out.empty() ? "{}" : out[0], nullptr, false);
    if (list.is_object() && list["data"].size() == 1 && list["data"][0].value("name", "") == "fresh" &&
        list["data"][0].value("connected", false)) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(list["data"].size(), 1u) << list.dump() << Log();
  EXPECT_EQ(list["data"][0].value("name", ""), "fresh");
  EXPECT_TRUE(list["data"][0].value("connected", false)) << list.dump() << Log();
  const auto gone = Run({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\n", "-u", "admin:pw", url + "/mosq"});
  EXPECT_EQ(gone, std::vector<std::string>{"404"});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", qb, "-t", "up/y", "-m", "via-fresh", "-q", "1"});
  EXPECT_EQ(up_sub->ReadLine(15000), "site3/up/y via-fresh") << Log();  // not site/: mosq is gone
  EXPECT_NE(Log().find("reload: bridge mosq removed"), std::string::npos) << Log();
  EXPECT_NE(Log().find("reload: bridge fresh added"), std::string::npos) << Log();
}

// hybrid_bridging: the QUIC upstream is not there, so the bridge falls back to the next
// server in hybrid_servers, mosquitto over TCP, and forwards through it.
TEST_F(ApplianceTcpTest, HybridBridgingFallsBackFromQuicToTcp) {
  Extra hybrid;
  std::ostringstream toml;
  toml << Header() << R"(
[bridges.mqtt.either]
server = "mqtt-quic://127.0.0.1:9"
proto_ver = 4
clientid = "qbridge-hybrid"
keepalive = "5s"
backoff_max = "1s"
quic_handshake_timeout = "1s"
quic_idle_timeout = "10s"
quic_keepalive = "4s"
ssl = { verify_peer = false }
hybrid_bridging = true
hybrid_servers = ["mqtt-quic://127.0.0.1:9", "mqtt-tcp://127.0.0.1:)" << broker_->port() << R"("]
forwards = [{ local_topic = "hy/#", remote_topic = "", prefix = "via-tcp/", qos = 1 }]
)";
  StartExtra(hybrid, "hybrid", toml.str());
  const int tcp = hybrid.tcp;
  ASSERT_GT(tcp, 0) << hybrid.Log();
  // Wait until the bridge is up (on the TCP fallback).
  ASSERT_TRUE(BridgeComesUp("http://127.0.0.1:" + std::to_string(hybrid.http) + "/api/v4/bridges/either"))
      << hybrid.Log();
  auto sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", std::to_string(broker_->port()), "-t", "via-tcp/#",
                    "-q", "1", "-v", "-C", "1", "-W", "15"});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(tcp), "-t", "hy/x", "-m", "fallback", "-q", "1"});
  EXPECT_EQ(sub->ReadLine(15000), "via-tcp/hy/x fallback");
  hybrid.proc.Signal(SIGTERM);
  EXPECT_EQ(hybrid.proc.Wait(10000), 0);
}

// Offline queue: a persistent subscriber (clean start 0, session expiry 600 s) goes away;
// 1,000 QoS 1 messages (and one QoS 0, which does not wait) are published for it; it comes
// back and gets all 1,000, once each, in order, within its Receive Maximum.
TEST_F(ApplianceTcpTest, PersistentSessionGetsWhatWasPublishedWhileAway) {
  const std::string qb = std::to_string(tcp_port_);
  const std::vector<std::string> sub = {"mosquitto_sub", "-h", "127.0.0.1", "-p", qb, "-V", "mqttv5",
                                        "-i", "offline-1", "-c", "-x", "600", "-q", "1", "-t", "off/#",
                                        "-D", "connect", "receive-maximum", "20"};
  // Subscribe, then leave (DISCONNECT; the session stays).
  std::vector<std::string> first = sub;
  first.push_back("-E");
  Run(first);
  auto metrics = [&] {
    auto out = Run({"curl", "-s", "-w", "\n", "-u", "admin:pw",
                    "http://127.0.0.1:" + std::to_string(http_port_) + "/api/v4/metrics"});
    return nlohmann::json::parse(out.empty() ? "{}" : out[0], nullptr, false)["data"]["south"];
  };
  // REST's figures are refreshed every 200 ms: wait for the one that is expected.
  auto wait_for = [&](const char* key, int want) {
    nlohmann::json m;
    for (int i = 0; i < 50 && (m = metrics()).value(key, -1) != want; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return m;
  };
  ASSERT_EQ(wait_for("offline_sessions", 1).value("offline_sessions", 0), 1) << Log();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the offline route in place

  Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", qb, "-t", "off/q0", "-m", "q0", "-q", "0"});
  Run({"bash", "-c", "seq 1 1000 | mosquitto_pub -h 127.0.0.1 -p " + qb + " -q 1 -t off/x -l"}, 30000);
  const auto m = wait_for("offline_queued", 1000);
  EXPECT_EQ(m.value("offline_queued", 0), 1000) << m.dump() << Log();
  EXPECT_EQ(m.value("offline_dropped", 1), 0) << m.dump();

  // Back: everything that waited, in order, then nothing more.
  std::vector<std::string> again = sub;
  for (const char* a : {"-C", "1000", "-W", "30"}) again.push_back(a);
  const std::vector<std::string> got = Run(again, 30000);
  ASSERT_EQ(got.size(), 1000u) << Log();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], std::to_string(i + 1)) << "at " << i;
  // Nothing more waits for it (no duplicate after the 1,000th).
  std::vector<std::string> later = sub;
  for (const char* a : {"-W", "2"}) later.push_back(a);
  EXPECT_TRUE(Run(later, 10000).empty());
  const auto after = wait_for("offline_delivered", 1000);
  EXPECT_EQ(after.value("offline_delivered", 0), 1000) << after.dump();
  EXPECT_EQ(after.value("offline_queued", 0), 1000) << after.dump();  // the QoS 0 one did not wait
  EXPECT_EQ(after.value("offline_dropped", 1), 0) << after.dump();
}

// IPv6: the TCP listener and REST on [::1], an mqtt-tcp:// bridge to a mosquitto that
// listens on ::1 only, mosquitto clients on both sides over ::1; QoS 1 both ways.
TEST_F(ApplianceTcpTest, SouthAndNorthOverIpv6) {
  if (!HasIpv6Loopback()) GTEST_SKIP() << "no ::1 on this host";
  auto b6 = MosquittoOnIpv6Loopback();
  ASSERT_TRUE(b6.ok()) << b6.status();
  const std::string mosq = std::to_string((*b6)->port());
  Extra v6;
  std::ostringstream toml;
  toml << Header("[::1]") << R"(
[bridges.mqtt.six]
server = "mqtt-tcp://[::1]:)" << mosq << R"("
proto_ver = 5
clientid = "qbridge-v6"
keepalive = "5s"
forwards = [{ local_topic = "up/#", remote_topic = "", prefix = "site6/", qos = 1 }]
subscription = [{ remote_topic = "cmd/#", local_topic = "", prefix = "down/", qos = 1 }]
)";
  StartExtra(v6, "v6", toml.str());
  const int tcp = v6.tcp;
  ASSERT_GT(tcp, 0) << v6.Log();
  auto log = [&] { return v6.Log(); };
  ASSERT_TRUE(BridgeComesUp("http://[::1]:" + std::to_string(v6.http) + "/api/v4/bridges/six")) << log();
  EXPECT_NE(log().find("MQTT over TCP on [::1]:"), std::string::npos) << log();
  EXPECT_NE(log().find("-> mqtt-tcp://[::1]:" + mosq), std::string::npos) << log();
  auto up_sub = Spawn({"mosquitto_sub", "-h", "::1", "-p", mosq, "-t", "site6/#", "-q", "1", "-v", "-C", "1",
                       "-W", "15"});
  auto down_sub = Spawn({"mosquitto_sub", "-h", "::1", "-p", std::to_string(tcp), "-t", "down/#", "-q", "1",
                         "-v", "-C", "1", "-W", "15", "-V", "mqttv5"});
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  Run({"mosquitto_pub", "-h", "::1", "-p", std::to_string(tcp), "-t", "up/six", "-m", "north", "-q", "1"});
  Run({"mosquitto_pub", "-h", "::1", "-p", mosq, "-t", "cmd/six", "-m", "south", "-q", "1"});
  EXPECT_EQ(up_sub->ReadLine(15000), "site6/up/six north") << log();
  EXPECT_EQ(down_sub->ReadLine(15000), "down/cmd/six south") << log();
  v6.proc.Signal(SIGTERM);
  EXPECT_EQ(v6.proc.Wait(10000), 0);
}

// A bridge to a host name that resolves only to an IPv6 address (AAAA): qbridge runs in a
// mount namespace of its own whose /etc/hosts says "::1 v6only.test" (the machine's file is
// untouched), and the bridge to mqtt-tcp://v6only.test reaches a mosquitto on ::1 only.
TEST_F(ApplianceTcpTest, BridgeToAHostNameWithOnlyAnIpv6Address) {
  if (!HasIpv6Loopback()) GTEST_SKIP() << "no ::1 on this host";
  if (geteuid() != 0) GTEST_SKIP() << "not root: a private /etc/hosts needs a mount namespace";
  auto b6 = MosquittoOnIpv6Loopback();
  ASSERT_TRUE(b6.ok()) << b6.status();
  const std::string mosq = std::to_string((*b6)->port());
  std::ofstream(dir_ + "/hosts") << "127.0.0.1 localhost\n::1 v6only.test\n";
  std::ofstream(dir_ + "/aaaa.toml") << Header() << R"(
[bridges.mqtt.named]
server = "mqtt-tcp://v6only.test:)" << mosq << R"("
proto_ver = 4
clientid = "qbridge-aaaa"
keepalive = "5s"
forwards = [{ local_topic = "up/#", remote_topic = "", prefix = "aaaa/", qos = 1 }]
)";
  Extra e;
  e.log_path = dir_ + "/aaaa.log";
  ASSERT_TRUE(e.proc.Start({"unshare", "-m", "--", "sh", "-c",
                            "mount --bind " + dir_ + "/hosts /etc/hosts && exec " + QBRIDGE_BIN + " --config " +
                                dir_ + "/aaaa.toml"},
                           e.log_path));
  const auto j = nlohmann::json::parse(e.proc.ReadLine(15000), nullptr, false);
  if (!j.is_object() && e.Log().find("mount") != std::string::npos) GTEST_SKIP() << "no mount namespace: " << e.Log();
  ASSERT_TRUE(j.is_object()) << e.Log();
  e.tcp = j.value("tcp_port", 0);
  e.http = j.value("http_port", 0);
  ASSERT_TRUE(BridgeComesUp("http://127.0.0.1:" + std::to_string(e.http) + "/api/v4/bridges/named")) << e.Log();
  EXPECT_NE(e.Log().find("-> mqtt-tcp://[::1]:" + mosq), std::string::npos) << e.Log();
  auto sub = Spawn({"mosquitto_sub", "-h", "::1", "-p", mosq, "-t", "aaaa/#", "-q", "1", "-v", "-C", "1", "-W", "15"});
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(e.tcp), "-t", "up/named", "-m", "by-name", "-q", "1"});
  EXPECT_EQ(sub->ReadLine(15000), "aaaa/up/named by-name") << e.Log();
  e.proc.Signal(SIGTERM);
  EXPECT_EQ(e.proc.Wait(10000), 0);
}

// qos0_backpressure over TCP: mosquitto, the upstream, freezes (SIGSTOP) while a device
// publishes QoS 0 as fast as its socket takes it. Once the bridge's connection holds half
// its bound, the appliance stops reading the device, so the device's own socket fills and
// its writes block: nothing is dropped (the bridge's queue_full stays 0), and the device,
// sending no PINGREQ while it is blocked, is not timed out for it. Thawed, mosquitto
// delivers every message the device wrote, in order.
TEST_F(ApplianceTcpTest, Qos0IntoAFrozenUpstreamHoldsThePublisherBackAndDropsNothing) {
  Extra edge;
  std::ostringstream toml;
  toml << Header() << R"([bridges.mqtt.held]
server = "mqtt-tcp://127.0.0.1:)" << broker_->port() << R"("
proto_ver = 4
clientid = "qbridge-held"
keepalive = "30s"
forwards = [{ local_topic = "flood/#", remote_topic = "", prefix = "site/", qos = 0 }]
)";
  StartExtra(edge, "held", toml.str());
  ASSERT_GT(edge.tcp, 0) << edge.Log();
  const std::string rest = "http://127.0.0.1:" + std::to_string(edge.http);
  ASSERT_TRUE(BridgeComesUp(rest + "/api/v4/bridges/held")) << edge.Log();

  // The collector on mosquitto: counts what arrives and checks the order.
  mqtt::Connect sc;
  sc.version = mqtt::Version::k311;
  sc.client_id = "held-collector";
  auto sub = MqttTcpClient::Connect("127.0.0.1", broker_->port(), sc, absl::Seconds(5));
  ASSERT_TRUE(sub.ok()) << sub.status();
  mqtt::Subscribe ss;
  ss.packet_id = 1;
  ss.subscriptions.push_back({"site/flood/#", mqtt::QoS::k0});
  ASSERT_TRUE((*sub)->Send(ss).ok());
  ASSERT_TRUE((*sub)->Receive(absl::Seconds(5)).ok());
  std::atomic<uint64_t> received{0}, disorder{0};
  std::atomic<bool> stop{false};
  struct Joiner {  // no thread left running on a failed assertion
    std::atomic<bool>& stop;
    std::thread t;
    ~Joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } collect{stop, std::thread([&, c = std::move(*sub)] {
    while (!stop) {
      auto p = c->Receive(absl::Milliseconds(100));
      if (!p.ok()) continue;
      const auto* pub = std::get_if<mqtt::Publish>(&p->packet);
      if (pub == nullptr) continue;
      const std::string body(pub->payload.begin(), pub->payload.begin() + std::min<size_t>(pub->payload.size(), 16));
      if (std::strtoull(body.c_str(), nullptr, 10) != received) ++disorder;
      ++received;
    }
  })};

  // The device: keepalive 2 s (timed out after 3 s without a packet).
  mqtt::Connect dc;
  dc.version = mqtt::Version::k5;
  dc.client_id = "held-device";
  dc.keep_alive = 2;
  auto dev = MqttTcpClient::Connect("127.0.0.1", uint16_t(edge.tcp), dc, absl::Seconds(5));
  ASSERT_TRUE(dev.ok()) << dev.status();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the route is in place

  ASSERT_EQ(::kill(broker_->pid(), SIGSTOP), 0);
  struct Thaw {  // mosquitto runs again whatever happens below
    int pid;
    ~Thaw() { ::kill(pid, SIGCONT); }
  } thaw{broker_->pid()};
  std::atomic<uint64_t> sent{0};
  std::atomic<bool> stop_pub{false};
  Joiner publish{stop_pub, std::thread([&] {
    std::string payload(1024, 'x');
    mqtt::Publish p;
    p.topic = "flood/dev";
    for (uint64_t i = 0; i < 200'000 && !stop_pub; ++i) {  // 200 MiB at most
      const std::string seq = std::to_string(i) + " ";
      std::copy(seq.begin(), seq.end(), payload.begin());
      p.payload = mqtt::Bytes(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
      if (!(*dev)->Send(p).ok()) return;
      ++sent;
    }
  })};
  // Held back: the device's writes stop going through for a second.
  uint64_t last = 0;
  bool blocked = false;
  for (int i = 0; i < 100 && !blocked; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    blocked = sent == last && sent > 0;
    last = sent;
  }
  EXPECT_TRUE(blocked) << "the device was never held back; sent " << sent;
  // Longer than the device's keepalive allows, with no packet from it.
  std::this_thread::sleep_for(std::chrono::milliseconds(4000));
  auto metrics = nlohmann::json::parse(Run({"curl", "-s", "-u", "admin:pw", "-w", "\n", rest + "/api/v4/metrics"})[0], nullptr, false);
  const auto bridge = nlohmann::json::parse(Run({"curl", "-s", "-u", "admin:pw", "-w", "\n", rest + "/api/v4/bridges/held"})[0], nullptr, false);
  stop_pub = true;
  EXPECT_EQ(::kill(broker_->pid(), SIGCONT), 0);
  publish.t.join();
  EXPECT_GT(metrics["data"]["workers"].value("south_held_back{worker=\"0\"}", 0), 0) << metrics.dump();
  EXPECT_EQ(metrics["data"]["south"].value("keepalive_timeouts", -1), 0) << metrics.dump();
  EXPECT_EQ(bridge["data"]["traffic"]["drops_by_reason"].value("queue_full", -1), 0) << bridge.dump();
  EXPECT_EQ(bridge["data"]["traffic"].value("drops", -1), 0) << bridge.dump();
  EXPECT_EQ(bridge["data"]["traffic"].value("held_back", -1), 1) << bridge.dump();

  // Everything the device wrote arrives, in order, and the device is still connected.
  for (int i = 0; i < 300 && received < sent; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(received.load(), sent.load()) << edge.Log();
  EXPECT_EQ(disorder.load(), 0u);
  EXPECT_GT(sent.load(), 1000u);
  mqtt::Pingreq ping;
  bool pong = false;
  for (int i = 0; i < 20 && !pong && (i > 0 || (*dev)->Send(ping).ok()); ++i) {
    auto r = (*dev)->Receive(absl::Milliseconds(250));
    pong = r.ok() && std::holds_alternative<mqtt::Pingresp>(r->packet);
  }
  EXPECT_TRUE(pong) << "the device was disconnected";
}

}  // namespace
}  // namespace qbridge::testing
