// Shared subscriptions ($share/GROUP/FILTER) through the real `qbridge` binary, with
// mosquitto clients as the members (MQTT 5 and 3.1.1) and a QoS 1 publisher of our own that
// counts what was acknowledged:
//   - three members split the stream about evenly (round robin); one killed mid-stream,
//     every acknowledged message still reaches a member;
//   - a member that leaves with deliveries it never acknowledged: another member gets them;
//   - sticky: one member takes everything while it stays.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/support/mqtt_tcp_client.h"
#include "tests/support/subprocess.h"

#ifndef QBRIDGE_BIN
#error "QBRIDGE_BIN must be defined"
#endif

namespace qbridge::testing {
namespace {

using nlohmann::json;

class SharedSubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!MosquittoBroker::Available()) GTEST_SKIP() << "mosquitto clients are not installed (tools/setup.sh)";
    char tmpl[] = "/tmp/qbridge-share-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    if (qbridge_.pid() > 0) {
      qbridge_.Signal(SIGTERM);
      EXPECT_EQ(qbridge_.Wait(10000), 0) << Log();
    }
    std::error_code ec;
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_, ec);
  }
  void Start(const std::string& mqtt_section = "") {
    std::ofstream(dir_ + "/qbridge.toml") << "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n\n[http_server]\n"
                                             "bind = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"pw\"\n"
                                          << mqtt_section;
    ASSERT_TRUE(qbridge_.Start({QBRIDGE_BIN, "--config", dir_ + "/qbridge.toml"}, dir_ + "/qbridge.log"));
    const json j = json::parse(qbridge_.ReadLine(15000), nullptr, false);
    ASSERT_TRUE(j.is_object()) << Log();
    tcp_ = j.value("tcp_port", 0);
    http_ = j.value("http_port", 0);
    ASSERT_GT(tcp_, 0) << Log();
  }
  std::string Log() {
    std::ifstream f(dir_ + "/qbridge.log");
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  std::unique_ptr<Subprocess> Member(const std::string& filter, bool v5 = true) {
    auto p = std::make_unique<Subprocess>();
    std::vector<std::string> argv = {"mosquitto_sub", "-h", "127.0.0.1", "-p", std::to_string(tcp_), "-t", filter,
                                     "-q", "1", "-W", "60"};
    if (v5) argv.insert(argv.end(), {"-V", "mqttv5"});
    EXPECT_TRUE(p->Start(argv, dir_ + "/member.err"));
    return p;
  }
  // Every line a member printed until `ms` pass without one.
  static std::vector<std::string> Lines(Subprocess& p, int ms = 1500) {
    std::vector<std::string> out;
    for (std::string l; !(l = p.ReadLine(ms)).empty();) out.push_back(l);
    return out;
  }
  // A QoS 1 publisher of our own: payloads "from", "from + 1", ... on `topic`, each PUBACK
  // awaited; returns the payloads acknowledged with success.
  std::vector<std::string> Publish(const std::string& topic, int from, int count) {
    std::vector<std::string> acked;
    auto c = MqttTcpClient::Dial("127.0.0.1", uint16_t(tcp_), absl::Seconds(2));
    EXPECT_TRUE(c.ok());
    if (!c.ok()) return acked;
    (*c)->set_version(mqtt::Version::k5);
    mqtt::Connect conn;
    conn.version = mqtt::Version::k5;
    const std::string id = "share-publisher-" + std::to_string(from);
    conn.client_id = id;  // a view
    EXPECT_TRUE((*c)->Send(conn).ok());
    EXPECT_TRUE((*c)->Receive(absl::Seconds(5)).ok());
    for (int i = from; i < from + count; ++i) {
      mqtt::Publish p;
      p.qos = mqtt::QoS::k1;
      p.topic = topic;
      p.packet_id = uint16_t(i % 65000 + 1);
      const std::string body = std::to_string(i);
      p.payload = mqtt::Bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      EXPECT_TRUE((*c)->Send(p).ok());
      auto r = (*c)->Receive(absl::Seconds(5));
      const auto* ack = r.ok() ? std::get_if<mqtt::PubAck>(&r->packet) : nullptr;
      if (ack && uint8_t(ack->reason) < 0x80) acked.push_back(body);
    }
    return acked;
  }
  // A worker counter summed over workers, once it reads `want` (REST refreshes every 200 ms; bounded wait).
  uint64_t Counter(const std::string& name, uint64_t want) {
    uint64_t v = 0;
    for (int i = 0; i < 30; ++i) {
      v = 0;  // summed over workers: name{worker="N"}
      const json w = Metrics().value("workers", json::object());
      for (const auto& [k, n] : w.items())
        if (k.rfind(name + "{", 0) == 0 && n.is_number_unsigned()) v += n.get<uint64_t>();
      if (v == want) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return v;
  }
  json Metrics() {
    Subprocess p;
    EXPECT_TRUE(p.Start({"curl", "-s", "-w", "\n", "-u", "admin:pw",
                         "http://127.0.0.1:" + std::to_string(http_) + "/api/v4/metrics"}));
    json j = json::parse(p.ReadLine(5000), nullptr, false);
    p.Wait(2000);
    return j.is_object() && j["data"].is_object() ? j["data"] : json::object();
  }

  Subprocess qbridge_;
  std::string dir_;
  int tcp_ = 0, http_ = 0;
};

// Three members (two MQTT 5, one 3.1.1) split 1,500 messages a third each; one is killed
// (SIGKILL) and the next 1,500 go to the two left; every acknowledged message reached a
// member, and a plain subscriber beside the group got every one.
TEST_F(SharedSubTest, ThreeMembersSplitTheStreamAndOneIsKilled) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto a = Member("$share/workers/jobs/#");
  auto b = Member("$share/workers/jobs/#");
  auto c = Member("$share/workers/jobs/#", /*v5=*/false);
  auto all = Member("jobs/#");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  std::vector<std::string> acked = Publish("jobs/x", 0, 1500);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::vector<std::string> c_lines = Lines(*c, 500);
  c->Signal(SIGKILL);
  c->Wait(5000);
  const std::vector<std::string> more = Publish("jobs/x", 1500, 1500);
  acked.insert(acked.end(), more.begin(), more.end());
  ASSERT_EQ(acked.size(), 3000u) << Log();

  const std::vector<std::string> a_lines = Lines(*a), b_lines = Lines(*b), all_lines = Lines(*all);
  auto before_kill = [](const std::vector<std::string>& v) {
    return std::count_if(v.begin(), v.end(), [](const std::string& s) { return std::stoi(s) < 1500; });
  };
  // Round robin over three: about 500 each of the first 1,500.
  for (const auto* v : {&a_lines, &b_lines, &c_lines}) {
    EXPECT_GT(before_kill(*v), 400) << "a member got too few";
    EXPECT_LT(before_kill(*v), 600) << "a member got too many";
  }
  std::map<std::string, int> seen;
  for (const auto* v : {&a_lines, &b_lines, &c_lines})
    for (const std::string& s : *v) ++seen[s];
  size_t missing = 0;
  for (const std::string& s : acked) missing += seen.count(s) == 0;
  EXPECT_EQ(missing, 0u) << "acknowledged messages no member got";
  for (const auto& [s, n] : seen) EXPECT_EQ(n, 1) << s << " delivered to " << n << " members";
  EXPECT_EQ(all_lines.size(), 3000u) << "a plain subscription beside the group gets everything";
  EXPECT_EQ(Counter("routed_shared", 3000), 3000u) << Metrics().dump();
}

// A member that takes deliveries and never acknowledges them, then leaves: each of those
// goes to the other member, which ends up with every message.
TEST_F(SharedSubTest, UnacknowledgedDeliveriesOfAMemberThatLeavesGoToAnother) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto taker = MqttTcpClient::Dial("127.0.0.1", uint16_t(tcp_), absl::Seconds(2));
  ASSERT_TRUE(taker.ok());
  (*taker)->set_version(mqtt::Version::k5);
  mqtt::Connect conn;
  conn.version = mqtt::Version::k5;
  conn.client_id = "share-silent";
  ASSERT_TRUE((*taker)->Send(conn).ok());
  ASSERT_TRUE((*taker)->Receive(absl::Seconds(5)).ok());
  mqtt::Subscribe s;
  s.packet_id = 1;
  s.subscriptions.push_back({"$share/g/r/#", mqtt::QoS::k1});
  ASSERT_TRUE((*taker)->Send(s).ok());
  auto suback = (*taker)->Receive(absl::Seconds(5));
  ASSERT_TRUE(suback.ok() && std::holds_alternative<mqtt::Suback>(suback->packet));
  auto other = Member("$share/g/r/#");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));

  const std::vector<std::string> acked = Publish("r/1", 0, 20);
  ASSERT_EQ(acked.size(), 20u);
  int held = 0;  // what the silent member got and did not acknowledge
  for (;;) {
    auto r = (*taker)->Receive(absl::Milliseconds(500));
    if (!r.ok()) break;
    if (std::holds_alternative<mqtt::Publish>(r->packet)) ++held;
  }
  EXPECT_GE(held, 5) << "round robin should have given the silent member about half";
  taker->reset();  // gone, without a PUBACK for any of them
  std::vector<std::string> got;
  for (std::string l; got.size() < 20 && !(l = other->ReadLine(5000)).empty();) got.push_back(l);
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), std::set<std::string>(acked.begin(), acked.end()))
      << Log();
  EXPECT_EQ(Counter("shared_redelivered", uint64_t(held)), uint64_t(held)) << Metrics().dump();
}

// sticky: the member that got the first message gets every one while it stays, a member
// joining meanwhile (a new routing snapshot) included; once it leaves, another one does.
TEST_F(SharedSubTest, StickyKeepsOneMember) {
  ASSERT_NO_FATAL_FAILURE(Start("\n[mqtt]\nshared_subscription_strategy = \"sticky\"\n"));
  auto a = Member("$share/s/st/#");
  auto b = Member("$share/s/st/#");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_EQ(Publish("st/x", 0, 50).size(), 50u);
  auto c = Member("$share/s/st/#");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_EQ(Publish("st/x", 50, 50).size(), 50u);
  const std::vector<std::string> la = Lines(*a), lb = Lines(*b), lc = Lines(*c);
  EXPECT_EQ(la.size() + lb.size() + lc.size(), 100u);
  EXPECT_TRUE(lc.empty()) << "the member that joined took " << lc.size();
  EXPECT_TRUE(la.empty() || lb.empty()) << la.size() << " and " << lb.size();
  // The sticky member leaves: the rest go to one of the others, and stay there.
  Subprocess& sticky = la.empty() ? *b : *a;
  sticky.Signal(SIGTERM);
  sticky.Wait(5000);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_EQ(Publish("st/x", 100, 20).size(), 20u);
  const size_t after_a = Lines(*a).size(), after_b = Lines(*b).size(), after_c = Lines(*c).size();
  EXPECT_EQ(after_a + after_b + after_c, 20u);
  EXPECT_EQ(std::max({after_a, after_b, after_c}), 20u) << after_a << " " << after_b << " " << after_c;
}

}  // namespace
}  // namespace qbridge::testing
