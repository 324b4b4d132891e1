// The REST server over real HTTP on loopback, fed synthetic reports: the dashboard's files
// and its endpoints (history, paged clients, masked config), and Basic auth on all of them.
#include "controlplane/rest.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "controlplane/config.h"

namespace qbridge::cp {
namespace {

using nlohmann::json;

constexpr const char* kConfig = R"(
[http_server]
bind = "127.0.0.1:0"
username = "admin"
password = "s3cret-http"

[bridges.mqtt.cloud]
server = "mqtt-quic://127.0.0.1:14567"
clientid = "edge-1"
username = "edge"
password = "s3cret-bridge"
keepalive = "30s"
forwards = [ { local_topic = "a/<b>/#", remote_topic = "", qos = 1 } ]
ssl = { verify_peer = false, key_password = "s3cret-key" }
)";

Controlplane::BridgeReport Bridge(const std::string& name) {
  Controlplane::BridgeReport b{};
  b.name = name;
  b.state = "connected";
  b.enabled = true;
  b.keepalive_s = 30;
  return b;
}

class RestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseConfig(kConfig, "rest_test.toml", ConfigChecks{.files = false, .resolve = false});
    ASSERT_TRUE(c.ok()) << c.status();
    cfg_ = std::make_unique<AppConfig>(std::move(*c));
    auto r = RestServer::Start(*cfg_->http, cfg_.get());
    ASSERT_TRUE(r.ok()) << r.status();
    rest_ = std::move(*r);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", rest_->port());
    client_->set_basic_auth("admin", "s3cret-http");
  }

  json Get(const std::string& path) {
    auto r = client_->Get(path);
    EXPECT_TRUE(r) << path;
    if (!r) return json();
    EXPECT_EQ(r->status, 200) << path << ": " << r->body;
    return json::parse(r->body, nullptr, false);
  }

  // A report at `at_s` seconds with `in` PUBLISHes received so far and the bridge's totals.
  std::shared_ptr<Observed> Report(double at_s, uint64_t in, uint64_t tx) {
    auto o = std::make_shared<Observed>();
    o->report.at = dp::MonoNs(at_s * 1e9);
    o->wall_ms = 1'700'000'000'000 + uint64_t(at_s * 1000);
    o->report.bridges.push_back(Bridge("cloud"));
    o->traffic.resize(1);
    o->traffic[0].tx_msgs = tx;
    o->worker_counters = {{"publish_in{worker=\"0\"}", in / 2}, {"publish_in{worker=\"1\"}", in - in / 2},
                          {"publish_out{worker=\"0\"}", tx}, {"drop_no_route{worker=\"0\"}", 0}};
    return o;
  }

  std::unique_ptr<AppConfig> cfg_;
  std::unique_ptr<RestServer> rest_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(RestTest, EveryPathNeedsThePassword) {
  httplib::Client wrong("127.0.0.1", rest_->port());
  wrong.set_basic_auth("admin", "nope");
  httplib::Client none("127.0.0.1", rest_->port());
  for (const char* path : {"/dashboard/", "/dashboard/app.js", "/api/v4/history", "/api/v4/config",
                           "/api/v4/clients", "/api/v4/bridges", "/api/v4/bridges/cloud",
                           "/api/v4/metrics", "/metrics"}) {
    for (httplib::Client* c : {&wrong, &none}) {
      auto r = c->Get(path);
      ASSERT_TRUE(r) << path;
      EXPECT_EQ(r->status, 401) << path;
      EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Basic realm=\"qbridge\"") << path;
      EXPECT_EQ(r->body.find("cloud"), std::string::npos) << path;
      EXPECT_EQ(r->body.find("<html"), std::string::npos) << path;
    }
  }
  auto r = wrong.Post("/api/v4/bridges/switch/cloud", R"({"enable": false})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_TRUE(rest_->TakeCommands().empty());
}

// A browser holding the login sends it with any site's form post: the switch takes JSON
// from this origin only.
TEST_F(RestTest, SwitchRefusesWhatAFormOrAnotherSiteSends) {
  // What <form enctype="text/plain"> can make of {"enable":false}.
  auto r = client_->Post("/api/v4/bridges/switch/cloud", R"({"enable":false,"x":"="})", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  httplib::Headers cross{{"Sec-Fetch-Site", "cross-site"}};
  r = client_->Post("/api/v4/bridges/switch/cloud", cross, R"({"enable": false})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  httplib::Headers same_site{{"Sec-Fetch-Site", "same-site"}};  // another port of this host
  r = client_->Post("/api/v4/bridges/switch/cloud", same_site, R"({"enable": false})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  EXPECT_TRUE(rest_->TakeCommands().empty());

  httplib::Headers page{{"Sec-Fetch-Site", "same-origin"}};
  r = client_->Post("/api/v4/bridges/switch/cloud", page, R"({"enable": false})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  const auto commands = rest_->TakeCommands();
  ASSERT_EQ(commands.size(), 1u);
  EXPECT_EQ(commands[0].bridge, "cloud");
  EXPECT_FALSE(commands[0].enable);
}

TEST_F(RestTest, ServesTheEmbeddedDashboard) {
  auto r = client_->Get("/dashboard");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 301);
  EXPECT_EQ(r->get_header_value("Location"), "/dashboard/");

  r = client_->Get("/dashboard/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(r->body.find("<title>qbridge</title>"), std::string::npos);
  // The page may load nothing from anywhere else, and no inline script.
  EXPECT_NE(r->get_header_value("Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(r->body.find("http://"), std::string::npos);
  EXPECT_EQ(r->body.find("https://"), std::string::npos);

  for (const auto& [file, type] : {std::pair{"app.js", "text/javascript; charset=utf-8"},
                                   std::pair{"style.css", "text/css; charset=utf-8"},
                                   std::pair{"uPlot.iife.min.js", "text/javascript; charset=utf-8"},
                                   std::pair{"uPlot.min.css", "text/css; charset=utf-8"}}) {
    r = client_->Get(absl::StrCat("/dashboard/", file));
    ASSERT_TRUE(r) << file;
    EXPECT_EQ(r->status, 200) << file;
    EXPECT_EQ(r->get_header_value("Content-Type"), type) << file;
    EXPECT_GT(r->body.size(), 500u) << file;
  }
  EXPECT_NE(client_->Get("/dashboard/app.js")->body.find("textContent"), std::string::npos);
  r = client_->Get("/dashboard/missing.js");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

TEST(History, OneSamplePerSecondAsRates) {
  History h;
  auto report = [](double at_s, uint64_t in, uint64_t tx, uint64_t drops) {
    Observed o;
    o.report.at = dp::MonoNs(at_s * 1e9);
    o.wall_ms = uint64_t(at_s * 1000);
    o.report.bridges.push_back(Bridge("cloud"));
    o.report.sessions = 7;
    o.traffic.resize(1);
    o.traffic[0].tx_msgs = tx;
    o.traffic[0].rx_msgs = tx / 10;
    o.traffic[0].drop_queue_full = drops;
    o.traffic[0].drop_store_full = drops;
    // drop_route_failed counts the bridge's drops again; drop_no_route is not a lost message.
    o.worker_counters = {{"publish_in{worker=\"0\"}", in}, {"publish_inflight{worker=\"0\"}", 99999},
                         {"publish_out{worker=\"0\"}", tx}, {"drop_route_failed{worker=\"0\"}", 2 * drops},
                         {"drop_no_route{worker=\"1\"}", 5 * drops},
                         {"drop_client_queue_full{worker=\"1\"}", drops}};
    return o;
  };
  h.Add(report(10, 1000, 500, 0));  // the first report only sets the baseline
  EXPECT_TRUE(h.Since(0).empty());
  h.Add(report(10.5, 1500, 800, 0));  // under a second later: no sample
  EXPECT_TRUE(h.Since(0).empty());
  h.Add(report(12, 5000, 2500, 3));  // 2 s after the baseline
  auto s = h.Since(0);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].seq, 1u);
  EXPECT_EQ(s[0].wall_ms, 12'000u);
  EXPECT_DOUBLE_EQ(s[0].in, 2000);  // (5000 - 1000) / 2 s; publish_inflight is another counter
  EXPECT_DOUBLE_EQ(s[0].out, 1000);
  EXPECT_DOUBLE_EQ(s[0].drops, 4.5);  // (3 + 3 bridge drops + 3 client queue) / 2 s
  EXPECT_EQ(s[0].sessions, 7u);
  ASSERT_EQ(s[0].bridges.size(), 1u);
  EXPECT_EQ(s[0].bridges[0].name, "cloud");
  EXPECT_DOUBLE_EQ(s[0].bridges[0].tx, 1000);
  EXPECT_DOUBLE_EQ(s[0].bridges[0].rx, 100);
  h.Add(report(13, 5000, 2500, 3));
  ASSERT_EQ(h.Since(1).size(), 1u);
  EXPECT_EQ(h.Since(1)[0].seq, 2u);
  EXPECT_DOUBLE_EQ(h.Since(1)[0].in, 0);
  EXPECT_TRUE(h.Since(2).empty());
  EXPECT_TRUE(h.Since(99).empty());

  // A bridge a reload removed leaves the samples; counters that went back (never expected)
  // read as zero, not as a huge rate.
  Observed removed = report(14, 10, 2600, 3);
  removed.report.bridges[0].removed = true;
  removed.wall_ms = 1;  // the wall clock stepped back: the numbering does not care
  h.Add(removed);
  ASSERT_EQ(h.Since(2).size(), 1u);
  EXPECT_TRUE(h.Since(2)[0].bridges.empty());
  EXPECT_DOUBLE_EQ(h.Since(2)[0].in, 0);

  // Fifteen minutes, then the oldest go.
  for (int i = 0; i < 1000; ++i) h.Add(report(15 + i, 0, 0, 0));
  s = h.Since(0);
  EXPECT_EQ(s.size(), History::kSamples);
  EXPECT_EQ(s.back().wall_ms, 1'014'000u);
  EXPECT_EQ(s.back().seq, 1003u);
  EXPECT_EQ(s.front().seq, 1003u - History::kSamples + 1);
  EXPECT_EQ(h.Since(1000).size(), 3u);
}

TEST_F(RestTest, HistoryEndpoint) {
  rest_->Publish(Report(1, 0, 0));
  rest_->Publish(Report(2, 300, 100));
  rest_->Publish(Report(3, 900, 400));
  json h = Get("/api/v4/history")["data"];
  EXPECT_EQ(h["interval_s"], 1);
  ASSERT_EQ(h["samples"].size(), 2u);
  EXPECT_DOUBLE_EQ(h["samples"][1]["in"].get<double>(), 600);
  EXPECT_DOUBLE_EQ(h["samples"][1]["out"].get<double>(), 300);
  EXPECT_DOUBLE_EQ(h["samples"][1]["bridges"]["cloud"]["tx"].get<double>(), 300);
  const uint64_t seq0 = h["samples"][0]["seq"];
  h = Get(absl::StrCat("/api/v4/history?since=", seq0))["data"];
  ASSERT_EQ(h["samples"].size(), 1u);
  EXPECT_EQ(h["samples"][0]["seq"].get<uint64_t>(), seq0 + 1);
  EXPECT_EQ(Get("/api/v4/history?since=junk")["data"]["samples"].size(), 2u);  // junk: everything
}

TEST_F(RestTest, ClientsArePagedSortedAndSearched) {
  auto o = std::make_shared<Observed>();
  o->report.at = 100 * dp::kSecNs;
  for (int i = 24; i >= 0; --i) {
    o->report.clients.push_back(Controlplane::ClientReport{absl::StrCat("dev-", i < 10 ? "0" : "", i), {}, 30, 5, 1, 0,
                                                           i % 2 == 0, 1 + size_t(i % 3), 40 * dp::kSecNs});
  }
  o->report.clients.push_back(Controlplane::ClientReport{"<b>Other</b>", {}, 60, 4, 0, 2, false, 1, 0});
  o->report.sessions = 26;
  rest_->Publish(o);

  json all = Get("/api/v4/clients");
  EXPECT_EQ(all["data"].size(), 26u);
  EXPECT_EQ(all["meta"]["count"], 26);
  EXPECT_EQ(all["meta"]["sessions"], 26);
  EXPECT_FALSE(all["meta"].contains("listed"));
  EXPECT_EQ(all["data"][0]["client_id"], "<b>Other</b>");  // sorted by id; JSON carries it as is
  EXPECT_EQ(all["data"][1]["client_id"], "dev-00");
  EXPECT_EQ(all["data"][1]["transport"], "tcp");
  EXPECT_EQ(all["data"][2]["transport"], "quic");
  EXPECT_EQ(all["data"][2]["streams"], 2);
  EXPECT_DOUBLE_EQ(all["data"][1]["connected_for_s"].get<double>(), 60);

  json page = Get("/api/v4/clients?_page=2&_limit=10");
  ASSERT_EQ(page["data"].size(), 10u);
  EXPECT_EQ(page["data"][0]["client_id"], "dev-09");
  EXPECT_EQ(page["data"][9]["client_id"], "dev-18");
  EXPECT_EQ(page["meta"]["page"], 2);
  EXPECT_EQ(page["meta"]["limit"], 10);
  EXPECT_EQ(Get("/api/v4/clients?_page=4&_limit=10")["data"].size(), 0u);
  EXPECT_EQ(Get("/api/v4/clients?_page=18446744073709551615&_limit=10000")["data"].size(), 0u);
  EXPECT_EQ(Get("/api/v4/clients?_page=0&_limit=0")["data"].size(), 1u);  // page 1 of 1 per page

  json found = Get("/api/v4/clients?_like_clientid=OTHER");
  ASSERT_EQ(found["data"].size(), 1u);
  EXPECT_EQ(found["meta"]["count"], 1);
  EXPECT_EQ(found["meta"]["sessions"], 26);
  EXPECT_EQ(Get("/api/v4/clients?_like_clientid=dev-2")["meta"]["count"], 5);

  o = std::make_shared<Observed>(*o);
  o->report.sessions = 20'000;  // more than the report lists
  rest_->Publish(o);
  EXPECT_EQ(Get("/api/v4/clients?_limit=1")["meta"]["listed"], 26);
}

TEST_F(RestTest, ConfigIsShownWithSecretsMasked) {
  json c = Get("/api/v4/config")["data"];
  const std::string toml = c["toml"];
  EXPECT_EQ(c["source"], "rest_test.toml");
  EXPECT_EQ(c["check"], "OK (1 bridge, QUIC listener off, socket backend)");
  EXPECT_TRUE(c["notes"].is_array());
  EXPECT_NE(toml.find("[bridges.mqtt.cloud]"), std::string::npos) << toml;
  EXPECT_NE(toml.find("a/<b>/#"), std::string::npos) << toml;
  EXPECT_NE(toml.find("clientid = 'edge-1'"), std::string::npos) << toml;
  EXPECT_EQ(toml.find("s3cret"), std::string::npos) << toml;
  EXPECT_NE(toml.find("password = '******'"), std::string::npos) << toml;
  EXPECT_NE(toml.find("key_password = '******'"), std::string::npos) << toml;
}

TEST_F(RestTest, BridgeShowsEventsQueueAndSilence) {
  auto o = Report(50, 0, 0);
  Controlplane::BridgeReport& b = o->report.bridges[0];
  b.status.up_since = 20 * dp::kSecNs;
  b.status.max_control_silence_ns = 28'500 * dp::kMsNs;
  b.status.events.push_back(BridgeStatus::Event{5 * dp::kSecNs, "connected"});
  b.status.events.push_back(BridgeStatus::Event{10 * dp::kSecNs, "down: no PINGRESP in time"});
  b.status.events.push_back(BridgeStatus::Event{20 * dp::kSecNs, "connected"});
  b.status.rtt_hist = {8, 2, 0, 0, 0, 0};
  b.keepalive_s = 20;  // the upstream's Server Keep Alive replaced the file's 30 s
  b.forwards = cfg_->control.bridges[0].forwards;
  o->traffic[0].inflight = 32;
  o->traffic[0].queued = 1200;
  rest_->Publish(o);
  json j = Get("/api/v4/bridges/cloud")["data"];
  EXPECT_DOUBLE_EQ(j["connected_for_s"].get<double>(), 30);
  ASSERT_EQ(j["events"].size(), 3u);
  EXPECT_EQ(j["events"][1]["what"], "down: no PINGRESP in time");
  EXPECT_DOUBLE_EQ(j["events"][1]["ago_s"].get<double>(), 40);
  EXPECT_DOUBLE_EQ(j["keepalive_health"]["max_control_silence_ms"].get<double>(), 28'500);
  EXPECT_DOUBLE_EQ(j["keepalive_health"]["pingresp_rtt_p50_ms_at_most"].get<double>(), 1);
  EXPECT_DOUBLE_EQ(j["keepalive_health"]["pingresp_rtt_p99_ms_at_most"].get<double>(), 10);
  EXPECT_EQ(j["keepalive"], 30);
  EXPECT_EQ(j["keepalive_effective"], 20);
  EXPECT_EQ(j["traffic"]["inflight"], 32);
  EXPECT_EQ(j["traffic"]["queued"], 1200);
  json list = Get("/api/v4/bridges")["data"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_FALSE(list[0].contains("forwards"));
  list = Get("/api/v4/bridges?detail=true")["data"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["forwards"][0]["local_topic"], "a/<b>/#");
  const std::string prom = RestServer::Prometheus(*o, *cfg_);
  EXPECT_NE(prom.find("qbridge_bridge_queued{bridge=\"cloud\"} 1200\n"), std::string::npos);
  EXPECT_NE(prom.find("qbridge_bridge_max_control_silence_seconds{bridge=\"cloud\"} 28.5\n"), std::string::npos);
}

}  // namespace
}  // namespace qbridge::cp
