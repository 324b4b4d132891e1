#include "controlplane/rest.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "controlplane/dashboard.h"

namespace qbridge::cp {
namespace {

using nlohmann::json;

constexpr const char* kJson = "application/json";

json Error(int code, const std::string& message) { return json{{"code", code}, {"message", message}}; }

double Seconds(uint64_t ns) { return double(ns) / 1e9; }

// A percentile (1..100) of the PINGRESP round trips as the upper edge of the histogram bucket
// it falls in (ms; the last bucket reports the maximum seen).
double RttBoundMs(const BridgeStatus& s, uint64_t percent) {
  static const double kEdgesMs[] = {1, 10, 100, 1000, 10000};
  uint64_t total = 0;
  for (uint64_t n : s.rtt_hist) total += n;
  if (total == 0) return 0;
  const uint64_t rank = (total * percent + 99) / 100;  // >= 1: total > 0
  uint64_t seen = 0;
  for (size_t k = 0; k < 5; ++k) {
    seen += s.rtt_hist[k];
    if (seen >= rank) return kEdgesMs[k];
  }
  return double(s.rtt_max_ns) / 1e6;
}

// The config entry of the bridge the controlplane runs at index `i` (a reload may have
// removed and added bridges, so the file's order is not the runtime's); -1: none.
int ConfigIndex(const AppConfig& cfg, const Observed& o, size_t i) {
  if (i < o.report.bridges.size()) {
    for (size_t j = 0; j < cfg.control.bridges.size(); ++j)
      if (cfg.control.bridges[j].name == o.report.bridges[i].name) return int(j);
    return -1;
  }
  return i < cfg.control.bridges.size() ? int(i) : -1;  // no report yet: the file's order
}

// Runtime indices of the bridges that exist (not removed by a reload).
std::vector<size_t> LiveBridges(const AppConfig& cfg, const Observed& o) {
  std::vector<size_t> out;
  const size_t n = o.report.bridges.empty() ? cfg.control.bridges.size() : o.report.bridges.size();
  for (size_t i = 0; i < n; ++i) {
    if (i < o.report.bridges.size() && o.report.bridges[i].removed) continue;
    if (ConfigIndex(cfg, o, i) >= 0) out.push_back(i);
  }
  return out;
}

json BridgeJson(const AppConfig& cfg, const Observed& o, size_t i, bool detail) {
  const size_t ci = size_t(ConfigIndex(cfg, o, i));  // callers pass live indices only
  const BridgeConfig& b = cfg.control.bridges[ci];
  const dp::BridgeDialSettings& d = cfg.runtime.bridges[ci];
  const Controlplane::BridgeReport* r = i < o.report.bridges.size() ? &o.report.bridges[i] : nullptr;
  json j{{"name", b.name},
         {"enable", r ? r->enabled : b.enabled},
         {"server", absl::StrCat(UpstreamScheme(d), "://",
                                 HostPort(d.tls.server_name.empty() ? d.ip : d.tls.server_name, d.port))},
         {"proto_ver", int(b.version)},
         {"clientid", b.client_id},
         {"keepalive", b.keepalive_s},
         // The keepalive in force: the upstream's Server Keep Alive (CONNACK) overrides the file's.
         {"keepalive_effective", r ? r->keepalive_s : b.keepalive_s},
         {"state", r ? r->state : "unknown"},
         {"connected", r && r->state == "connected"}};
  if (r) {
    const BridgeStatus& s = r->status;
    j["keepalive_health"] = json{
        {"pingreqs_sent", s.pingreqs_sent},
        {"pingresps", s.pingresps},
        {"pingresp_timeouts", s.pingresp_timeouts},
        {"pingresp_rtt_last_ms", double(s.rtt_last_ns) / 1e6},
        {"pingresp_rtt_max_ms", double(s.rtt_max_ns) / 1e6},
        {"pingresp_rtt_p50_ms_at_most", RttBoundMs(s, 50)},
        {"pingresp_rtt_p99_ms_at_most", RttBoundMs(s, 99)},
        {"max_pingreq_gap_ms", double(s.max_pingreq_gap_ns) / 1e6},
        {"max_control_silence_ms", double(s.max_control_silence_ns) / 1e6},
        {"control_stream_idle_ms", double(r->control_idle_ns) / 1e6},
        {"pingresp_timeout_ms", double(r->pingresp_timeout_ns) / 1e6},
        {"keepalive_kicks", s.keepalive_kicks}};
    j["reconnects"] = s.reconnects;
    // Seconds since the connection now up got its CONNACK (absent while not connected).
    if (s.up_since && o.report.at >= s.up_since) j["connected_for_s"] = Seconds(o.report.at - s.up_since);
    json events = json::array();
    for (const BridgeStatus::Event& e : s.events) {
      events.push_back(json{{"ago_s", o.report.at >= e.at ? Seconds(o.report.at - e.at) : 0.0}, {"what", e.what}});
    }
    j["events"] = events;
    j["server_index"] = s.server;  // 0: `server`; 1..: hybrid_servers
    j["connects"] = s.connects;
  }
  if (i < o.traffic.size()) {
    const dp::BridgeTrafficTotals& t = o.traffic[i];
    j["traffic"] = json{{"tx_messages", t.tx_msgs}, {"tx_bytes", t.tx_bytes}, {"resent", t.resent}, {"rx_messages", t.rx_msgs},
                        {"rx_bytes", t.rx_bytes}, {"drops", t.drops()}, {"inflight", t.inflight}, {"held_back", t.held_back},
                        {"queued", t.queued}};
    json by_reason = json::object();
#define QBRIDGE_X(name) by_reason[#name] = t.drop_##name;
    QBRIDGE_BRIDGE_DROPS(QBRIDGE_X)
#undef QBRIDGE_X
    j["traffic"]["drops_by_reason"] = by_reason;
    j["quic_path"] = json{{"srtt_ms", double(t.srtt_ns) / 1e6}, {"min_rtt_ms", double(t.min_rtt_ns) / 1e6},
                          {"cwnd_bytes", t.cwnd_bytes}, {"bytes_in_flight", t.bytes_in_flight}};
    if (d.store) {  // the custody log (docs/store.md); keys without the "store_" prefix
      json st = json::object();
#define QBRIDGE_X(name, type, help) st[std::string(#name).substr(6)] = t.name;
      QBRIDGE_BRIDGE_STORE(QBRIDGE_X)
#undef QBRIDGE_X
      j["store"] = st;
    }
  }
  if (detail) {
    json fw = json::array(), sub = json::array();
    // What runs now (a SIGHUP reload may have changed it), else what the file said.
    const auto& forwards = r ? r->forwards : b.forwards;
    const auto& subscriptions = r ? r->subscriptions : b.subscriptions;
    for (const BridgeForward& f : forwards) {
      fw.push_back(json{{"local_topic", f.local_topic}, {"remote_topic", f.remote_topic},
                        {"qos", int(f.qos)}, {"retain", f.retain}, {"prefix", f.prefix},
                        {"suffix", f.suffix}, {"stream", f.slot}});
    }
    for (const BridgeSubscription& s : subscriptions) {
      sub.push_back(json{{"remote_topic", s.topic}, {"local_topic", s.local_topic}, {"qos", int(s.qos)},
                         {"prefix", s.prefix}, {"suffix", s.suffix}, {"stream", s.slot}});
    }
    j["forwards"] = fw;
    j["subscription"] = sub;
    j["clean_start"] = b.clean_start;
    j["quic_keepalive_ms"] = double(d.quic.keepalive_ns) / 1e6;
    j["quic_idle_timeout_ms"] = double(d.quic.idle_timeout_ns) / 1e6;
    j["data_streams"] = d.data_streams;
    j["verify_peer"] = d.tls.verify_peer;
    if (r) {
      json closes = json::object(), reasons = json::object();
      for (const auto& [k, v] : r->status.closes_by_app_error) closes[std::to_string(k)] = v;
      for (const auto& [k, v] : r->status.disconnects_by_reason) reasons[absl::StrFormat("0x%02X", k)] = v;
      j["closes_by_app_error"] = closes;
      j["disconnects_by_reason"] = reasons;
    }
  }
  return j;
}

std::string Label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// The sum over workers of a worker counter (entries are "name{worker=\"N\"}").
uint64_t WorkerSum(const Observed& o, std::string_view name) {
  uint64_t n = 0;
  for (const auto& [k, v] : o.worker_counters)
    if (k.size() > name.size() && k[name.size()] == '{' && k.compare(0, name.size(), name) == 0) n += v;
  return n;
}

// Messages not delivered (History::Sample::drops): the bridges' drops, every reason (the
// workers' drop_route_failed counts the same messages again), and deliveries a full client
// queue refused.
uint64_t MessageDrops(const Observed& o) {
  uint64_t n = WorkerSum(o, "drop_client_queue_full");
  for (const auto& t : o.traffic) n += t.drops();
  return n;
}

uint64_t QueryU64(const httplib::Request& req, const char* key, uint64_t fallback) {
  uint64_t v;
  if (!req.has_param(key) || !absl::SimpleAtoi(req.get_param_value(key), &v)) return fallback;
  return v;
}

}  // namespace

void History::Add(const Observed& o) {
  Totals t;
  t.at_ns = o.report.at;
  t.in = WorkerSum(o, "publish_in");
  t.out = WorkerSum(o, "publish_out");
  t.drops = MessageDrops(o);
  for (const auto& b : o.traffic) t.bridges.emplace_back(b.tx_msgs, b.rx_msgs);
  if (last_ && t.at_ns < last_->at_ns + dp::kSecNs) return;
  if (last_) {
    const double dt = double(t.at_ns - last_->at_ns) / 1e9;
    auto rate = [dt](uint64_t now, uint64_t then) { return now >= then ? double(now - then) / dt : 0.0; };
    Sample smp;
    smp.seq = ++seq_;
    smp.wall_ms = o.wall_ms;
    smp.in = rate(t.in, last_->in);
    smp.out = rate(t.out, last_->out);
    smp.drops = rate(t.drops, last_->drops);
    smp.sessions = o.report.sessions;
    for (size_t i = 0; i < o.report.bridges.size() && i < t.bridges.size(); ++i) {
      if (o.report.bridges[i].removed) continue;
      const auto then = i < last_->bridges.size() ? last_->bridges[i] : std::pair<uint64_t, uint64_t>{};
      smp.bridges.push_back(Bridge{o.report.bridges[i].name, rate(t.bridges[i].first, then.first),
                                   rate(t.bridges[i].second, then.second)});
    }
    if (samples_.size() == kSamples) samples_.pop_front();
    samples_.push_back(std::move(smp));
  }
  last_ = std::move(t);
}

std::vector<History::Sample> History::Since(uint64_t since) const {
  if (samples_.empty() || since >= samples_.back().seq) return {};
  // Numbers are consecutive: the first wanted one sits at a known distance from the end.
  const uint64_t want = samples_.back().seq - since;
  return std::vector<Sample>(samples_.end() - long(std::min<uint64_t>(want, samples_.size())), samples_.end());
}

std::string RestServer::Prometheus(const Observed& o, const AppConfig& config) {
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  };
  family("qbridge_uptime_seconds", "gauge", "Seconds since start.");
  absl::StrAppend(&out, "qbridge_uptime_seconds ", Seconds(o.uptime_ns), "\n");

  struct Series {
    const char* name;
    const char* type;
    const char* help;
    std::function<double(size_t)> value;
  };
  const auto& bridges = o.report.bridges;
  auto status = [&](size_t i) -> const BridgeStatus& { return bridges[i].status; };
  const std::vector<Series> per_bridge = {
      {"qbridge_bridge_connected", "gauge", "1 while the bridge's MQTT connection is up.",
       [&](size_t i) { return bridges[i].state == "connected" ? 1.0 : 0.0; }},
      {"qbridge_bridge_reconnects_total", "counter", "Connections after the first.",
       [&](size_t i) { return double(status(i).reconnects); }},
      {"qbridge_bridge_pingreqs_total", "counter", "PINGREQs sent on the control stream.",
       [&](size_t i) { return double(status(i).pingreqs_sent); }},
      {"qbridge_bridge_pingresp_timeouts_total", "counter", "Links declared dead for a missing PINGRESP.",
       [&](size_t i) { return double(status(i).pingresp_timeouts); }},
      {"qbridge_bridge_pingresp_rtt_seconds", "gauge", "The last PINGRESP round trip.",
       [&](size_t i) { return Seconds(status(i).rtt_last_ns); }},
      {"qbridge_bridge_pingresp_rtt_max_seconds", "gauge", "The longest PINGRESP round trip.",
       [&](size_t i) { return Seconds(status(i).rtt_max_ns); }},
      {"qbridge_bridge_control_stream_idle_seconds", "gauge",
       "Time since the control stream last carried a packet out (it must stay under keepalive).",
       [&](size_t i) { return Seconds(bridges[i].control_idle_ns); }},
      {"qbridge_bridge_max_control_silence_seconds", "gauge",
       "The longest the control stream went without a packet out before a PINGREQ (keep it under keepalive).",
       [&](size_t i) { return Seconds(status(i).max_control_silence_ns); }},
      {"qbridge_bridge_inflight", "gauge", "QoS 1/2 PUBLISHes sent to the upstream and not yet acknowledged.",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].inflight) : 0; }},
      {"qbridge_bridge_queued", "gauge", "PUBLISHes waiting to be sent to the upstream (QoS 1/2, and stored QoS 0).",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].queued) : 0; }},
      {"qbridge_bridge_held_back", "gauge",
       "South connections held back now because the bridge's data slot is crowded (qos0_backpressure).",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].held_back) : 0; }},
      {"qbridge_bridge_keepalive_kicks_total", "counter",
       "Closes with app error 1 after DISCONNECT 0x8D: the NanoMQ incident's fingerprint.",
       [&](size_t i) { return double(status(i).keepalive_kicks); }},
      {"qbridge_bridge_tx_messages_total", "counter", "PUBLISHes written to the upstream.",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].tx_msgs) : 0; }},
      {"qbridge_bridge_resent_total", "counter",
       "PUBLISHes sent again with DUP: after a reconnect, or recovered from the custody log.",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].resent) : 0; }},
      {"qbridge_bridge_tx_bytes_total", "counter", "Payload bytes written to the upstream.",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].tx_bytes) : 0; }},
      {"qbridge_bridge_rx_messages_total", "counter", "PUBLISHes received from the upstream.",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].rx_msgs) : 0; }},
      {"qbridge_bridge_rx_bytes_total", "counter", "Payload bytes received from the upstream.",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].rx_bytes) : 0; }},
      {"qbridge_bridge_quic_srtt_seconds", "gauge", "Smoothed RTT of the bridge's QUIC path.",
       [&](size_t i) { return i < o.traffic.size() ? Seconds(o.traffic[i].srtt_ns) : 0; }},
      {"qbridge_bridge_quic_cwnd_bytes", "gauge", "Congestion window of the bridge's QUIC path.",
       [&](size_t i) { return i < o.traffic.size() ? double(o.traffic[i].cwnd_bytes) : 0; }},
  };
  // Bridges a reload removed keep their index but leave the scrape.
  std::vector<size_t> live;
  for (size_t i = 0; i < bridges.size(); ++i)
    if (!bridges[i].removed) live.push_back(i);
  for (const Series& s : per_bridge) {
    family(s.name, s.type, s.help);
    for (size_t i : live) {
      absl::StrAppend(&out, s.name, "{bridge=\"", Label(bridges[i].name), "\"} ", s.value(i), "\n");
    }
  }
  // The custody logs of store-and-forward bridges (counters get Prometheus' _total suffix),
  // as the running configuration names them.
  const AppConfig& running = o.config ? *o.config : config;
  std::vector<size_t> stored;
  for (size_t i : live) {
    const int ci = ConfigIndex(running, o, i);
    if (i < o.traffic.size() && ci >= 0 && running.runtime.bridges[size_t(ci)].store) stored.push_back(i);
  }
#define QBRIDGE_X(field, type, help)                                                                 \
  {                                                                                                  \
    const std::string name = absl::StrCat("qbridge_bridge_" #field,                                  \
                                          std::string_view(#type) == "counter" ? "_total" : "");     \
    family(name.c_str(), #type, help);                                                               \
    for (size_t i : stored) {                                                                        \
      absl::StrAppend(&out, name, "{bridge=\"", Label(bridges[i].name), "\"} ", o.traffic[i].field, "\n"); \
    }                                                                                                \
  }
  QBRIDGE_BRIDGE_STORE(QBRIDGE_X)
#undef QBRIDGE_X
  family("qbridge_bridge_drops_total", "counter",
         "Messages for the bridge not delivered to the upstream, by reason: bridge_down (QoS 0 "
         "while disconnected), queue_full (QoS 1 beyond max_send_queue_len, QoS 0 beyond what may wait "
         "on the connection), refused (a failure PUBACK), not_encodable, removed (by a "
         "reload), store_full (the custody log at its cap), store_lost (unreadable from the log).");
  for (size_t i : live) {
    const dp::BridgeTrafficTotals t = i < o.traffic.size() ? o.traffic[i] : dp::BridgeTrafficTotals{};
#define QBRIDGE_X(reason)                                                                        \
  absl::StrAppend(&out, "qbridge_bridge_drops_total{bridge=\"", Label(bridges[i].name), "\",reason=\"", \
                  #reason, "\"} ", t.drop_##reason, "\n");
    QBRIDGE_BRIDGE_DROPS(QBRIDGE_X)
#undef QBRIDGE_X
  }
  family("qbridge_bridge_pingresp_rtt_histogram_seconds", "histogram", "PINGRESP round trips.");
  static const char* kLe[] = {"0.001", "0.01", "0.1", "1", "10", "+Inf"};
  for (size_t i : live) {
    uint64_t cum = 0;
    for (size_t k = 0; k < 6; ++k) {
      cum += status(i).rtt_hist[k];
      absl::StrAppend(&out, "qbridge_bridge_pingresp_rtt_histogram_seconds_bucket{bridge=\"",
                      Label(bridges[i].name), "\",le=\"", kLe[k], "\"} ", cum, "\n");
    }
    absl::StrAppend(&out, "qbridge_bridge_pingresp_rtt_histogram_seconds_count{bridge=\"",
                    Label(bridges[i].name), "\"} ", cum, "\n");
  }
  family("qbridge_bridge_closes_total", "counter", "Bridge connections ended, by QUIC application error.");
  for (size_t i : live)
    for (const auto& [k, v] : status(i).closes_by_app_error)
      absl::StrAppend(&out, "qbridge_bridge_closes_total{bridge=\"", Label(bridges[i].name),
                      "\",app_error=\"", k, "\"} ", v, "\n");
  family("qbridge_bridge_disconnects_total", "counter", "DISCONNECT packets from the upstream, by MQTT reason code.");
  for (size_t i : live)
    for (const auto& [k, v] : status(i).disconnects_by_reason)
      absl::StrAppend(&out, "qbridge_bridge_disconnects_total{bridge=\"", Label(bridges[i].name),
                      "\",reason=\"", absl::StrFormat("0x%02X", k), "\"} ", v, "\n");

  const SouthStats& s = o.report.south;
  const std::vector<std::pair<const char*, uint64_t>> south = {
      {"qbridge_south_connects_total", s.connects},
      {"qbridge_south_connack_refused_total", s.connack_refused},
      {"qbridge_south_auth_failures_total", s.auth_failures},
      {"qbridge_south_takeovers_total", s.takeovers},
      {"qbridge_south_keepalive_timeouts_total", s.keepalive_timeouts},
      {"qbridge_south_pingreqs_total", s.pingreqs},
      {"qbridge_south_subscribes_total", s.subscribes},
      {"qbridge_south_malformed_total", s.malformed},
      {"qbridge_south_offline_queued_total", s.offline_queued},
      {"qbridge_south_offline_delivered_total", s.offline_delivered},
      {"qbridge_south_offline_dropped_total", s.offline_dropped},
  };
  for (const auto& [name, v] : south) {
    family(name, "counter", "South (MQTT server side) events.");
    absl::StrAppend(&out, name, " ", v, "\n");
  }
  family("qbridge_south_sessions", "gauge", "Connected south clients.");
  absl::StrAppend(&out, "qbridge_south_sessions ", o.report.sessions, "\n");
  family("qbridge_south_offline_sessions", "gauge", "Sessions kept for clients that are away.");
  absl::StrAppend(&out, "qbridge_south_offline_sessions ", o.report.offline_sessions, "\n");
  for (const auto& [name, v] : o.worker_counters) {
    absl::StrAppend(&out, "qbridge_worker_", name, " ", v, "\n");
  }
  for (const auto& [name, v] : o.backend_counters) {
    absl::StrAppend(&out, "qbridge_backend_", name, " ", v, "\n");
  }
  (void)config;
  return out;
}

absl::StatusOr<std::unique_ptr<RestServer>> RestServer::Start(const HttpServerConfig& http,
                                                               const AppConfig* config) {
  std::unique_ptr<RestServer> r(new RestServer());
  r->config_ = config;
  r->http_ = http;
  r->server_ = std::make_unique<httplib::Server>();
  httplib::Server& s = *r->server_;
  RestServer* self = r.get();
  const std::string expected =
      "Basic " + absl::Base64Escape(absl::StrCat(http.username, ":", http.password));

  s.set_pre_routing_handler([expected](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") == expected) return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Basic realm=\"qbridge\"");
    res.set_content(Error(401, "authentication required").dump(), kJson);
    return httplib::Server::HandlerResponse::Handled;
  });
  // ?detail=true: each bridge as GET /api/v4/bridges/NAME shows it (the dashboard's one request).
  s.Get("/api/v4/bridges", [self](const httplib::Request& req, httplib::Response& res) {
    auto o = self->Current();
    const AppConfig& cfg = o->config ? *o->config : *self->config_;
    const bool detail = req.get_param_value("detail") == "true";
    json data = json::array();
    for (size_t i : LiveBridges(cfg, *o)) data.push_back(BridgeJson(cfg, *o, i, detail));
    res.set_content(json{{"code", 0}, {"data", data}}.dump(), kJson);
  });
  s.Get(R"(/api/v4/bridges/([^/]+))", [self](const httplib::Request& req, httplib::Response& res) {
    auto o = self->Current();
    const AppConfig& cfg = o->config ? *o->config : *self->config_;
    const std::string name = req.matches[1];
    for (size_t i : LiveBridges(cfg, *o)) {
      if (cfg.control.bridges[size_t(ConfigIndex(cfg, *o, i))].name == name) {
        res.set_content(json{{"code", 0}, {"data", BridgeJson(cfg, *o, i, true)}}.dump(), kJson);
        return;
      }
    }
    res.status = 404;
    res.set_content(Error(404, "no bridge named '" + name + "'").dump(), kJson);
  });
  s.Post(R"(/api/v4/bridges/switch/([^/]+))", [self](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    // A browser that holds the dashboard's login sends it along with any page's form post:
    // take commands only as JSON (a form cannot send that type without CORS' preflight,
    // which this server never grants) and never from another site.
    const std::string site = req.get_header_value("Sec-Fetch-Site");  // absent: not a browser
    if (!req.get_header_value("Content-Type").starts_with(kJson) ||
        !(site.empty() || site == "same-origin" || site == "none")) {
      res.status = 415;
      res.set_content(Error(415, "expected Content-Type: application/json from this origin").dump(), kJson);
      return;
    }
    json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded() || !body.is_object() || !body.contains("enable") || !body["enable"].is_boolean()) {
      res.status = 400;
      res.set_content(Error(400, "expected a JSON body {\"enable\": true|false}").dump(), kJson);
      return;
    }
    auto o = self->Current();
    const AppConfig& cfg = o->config ? *o->config : *self->config_;
    bool known = false;
    for (const auto& b : cfg.control.bridges) known |= b.name == name;
    if (!known) {
      res.status = 404;
      res.set_content(Error(404, "no bridge named '" + name + "'").dump(), kJson);
      return;
    }
    {
      std::lock_guard<std::mutex> l(self->mu_);
      self->commands_.push_back(Command{name, body["enable"].get<bool>()});
    }
    res.set_content(json{{"code", 0}}.dump(), kJson);
  });
  // EMQX v4's paging: _page (from 1) and _limit, and _like_clientid (a substring, any case).
  s.Get("/api/v4/clients", [self](const httplib::Request& req, httplib::Response& res) {
    auto o = self->Current();
    const uint64_t page = std::max<uint64_t>(1, QueryU64(req, "_page", 1));
    const uint64_t limit = std::clamp<uint64_t>(QueryU64(req, "_limit", 10'000), 1, 10'000);
    const std::string like = absl::AsciiStrToLower(req.get_param_value("_like_clientid"));
    std::vector<const Controlplane::ClientReport*> matched;
    for (const auto& c : o->report.clients) {
      if (like.empty() || absl::AsciiStrToLower(c.client_id).find(like) != std::string::npos) matched.push_back(&c);
    }
    // A stable order for paging: the report's follows a hash map.
    std::sort(matched.begin(), matched.end(),
              [](const auto* a, const auto* b) { return a->client_id < b->client_id; });
    json data = json::array();
    const uint64_t first = page - 1 <= matched.size() / limit ? (page - 1) * limit : matched.size();
    for (uint64_t k = first; k < matched.size() && k < first + limit; ++k) {
      const auto& c = *matched[k];
      data.push_back(json{{"client_id", c.client_id}, {"keepalive", c.keepalive_s},
                          {"proto_ver", c.proto_ver}, {"subscriptions", c.subscriptions},
                          {"pingreqs", c.pingreqs}, {"worker", c.conn.core},
                          {"transport", c.tcp ? "tcp" : "quic"}, {"streams", c.streams},
                          {"connected_for_s", o->report.at >= c.connected_at ? Seconds(o->report.at - c.connected_at) : 0.0}});
    }
    json meta{{"page", page}, {"limit", limit}, {"count", matched.size()}, {"sessions", o->report.sessions}};
    // The report holds at most 10,000 clients: a search sees only those.
    if (o->report.clients.size() < o->report.sessions) meta["listed"] = o->report.clients.size();
    res.set_content(json{{"code", 0}, {"data", data}, {"meta", meta}}.dump(), kJson);
  });
  s.Get("/api/v4/history", [self](const httplib::Request& req, httplib::Response& res) {
    std::vector<History::Sample> samples;
    {
      std::lock_guard<std::mutex> l(self->history_mu_);
      samples = self->history_.Since(QueryU64(req, "since", 0));
    }
    json out = json::array();
    for (const History::Sample& x : samples) {
      json bridges = json::object();
      for (const History::Bridge& b : x.bridges) bridges[b.name] = json{{"tx", b.tx}, {"rx", b.rx}};
      out.push_back(json{{"seq", x.seq}, {"t", x.wall_ms}, {"in", x.in}, {"out", x.out}, {"drops", x.drops},
                         {"sessions", x.sessions}, {"bridges", bridges}});
    }
    res.set_content(json{{"code", 0}, {"data", {{"interval_s", 1}, {"samples", out}}}}.dump(), kJson);
  });
  s.Get("/api/v4/config", [self](const httplib::Request&, httplib::Response& res) {
    auto o = self->Current();
    const AppConfig& cfg = o->config ? *o->config : *self->config_;
    res.set_content(json{{"code", 0},
                         {"data", {{"source", cfg.source}, {"toml", cfg.masked},
                                   {"check", CheckSummary(cfg)}, {"notes", cfg.notes}}}}
                        .dump(),
                    kJson);
  });
  // The dashboard: files embedded in the binary (controlplane/dashboard/), nothing fetched
  // from elsewhere, and a policy that lets the pages load nothing else either.
  s.Get("/dashboard", [](const httplib::Request&, httplib::Response& res) {
    res.set_redirect("/dashboard/", 301);
  });
  s.Get(R"(/dashboard/(.*))", [](const httplib::Request& req, httplib::Response& res) {
    std::string name = req.matches[1];
    if (name.empty()) name = "index.html";
    for (const DashboardAsset& a : DashboardAssets()) {
      if (a.path != name) continue;
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_header("X-Frame-Options", "DENY");
      res.set_header("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                     "frame-ancestors 'none'");
      res.set_content(reinterpret_cast<const char*>(a.data.data()), a.data.size(), std::string(a.type));
      return;
    }
    res.status = 404;
    res.set_content(Error(404, "no such file: " + name).dump(), kJson);
  });
  s.Get("/api/v4/metrics", [self](const httplib::Request&, httplib::Response& res) {
    auto o = self->Current();
    json workers = json::object(), backend = json::object();
    for (const auto& [k, v] : o->worker_counters) workers[k] = v;
    for (const auto& [k, v] : o->backend_counters) backend[k] = v;
    const SouthStats& s = o->report.south;
    json south{{"connects", s.connects}, {"connack_refused", s.connack_refused},
               {"auth_failures", s.auth_failures}, {"takeovers", s.takeovers},
               {"keepalive_timeouts", s.keepalive_timeouts}, {"pingreqs", s.pingreqs},
               {"subscribes", s.subscribes}, {"unsubscribes", s.unsubscribes},
               {"malformed", s.malformed}, {"sessions", o->report.sessions},
               {"offline_sessions", o->report.offline_sessions},
               {"offline_queued", s.offline_queued}, {"offline_delivered", s.offline_delivered},
               {"offline_dropped", s.offline_dropped}};
    res.set_content(json{{"code", 0},
                         {"data", {{"uptime_s", Seconds(o->uptime_ns)}, {"south", south},
                                   {"workers", workers}, {"backend", backend}}}}
                        .dump(),
                    kJson);
  });
  s.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    auto o = self->Current();
    res.set_content(Prometheus(*o, *self->config_), "text/plain; version=0.0.4");
  });
  // Browsers keep connections open; a short keep-alive stops a few open dashboards from
  // holding the server's worker threads away from Prometheus' scrapes.
  s.set_keep_alive_timeout(1);
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) res.set_content(Error(res.status, "no such endpoint").dump(), kJson);
  });

  int port = http.port;
  if (port == 0) {
    port = s.bind_to_any_port(http.ip);
    if (port < 0) return absl::UnavailableError(absl::StrCat("http_server: cannot bind ", http.ip));
  } else if (!s.bind_to_port(http.ip, port)) {
    return absl::UnavailableError(absl::StrCat("http_server: cannot bind ", HostPort(http.ip, port)));
  }
  r->port_ = uint16_t(port);
  r->observed_ = std::make_shared<Observed>();
  r->thread_ = std::thread([self] { self->server_->listen_after_bind(); });
  return r;
}

RestServer::~RestServer() { Stop(); }

void RestServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void RestServer::Publish(std::shared_ptr<const Observed> o) {
  {
    std::lock_guard<std::mutex> l(history_mu_);
    history_.Add(*o);
  }
  std::lock_guard<std::mutex> l(mu_);
  observed_ = std::move(o);
}

std::shared_ptr<const Observed> RestServer::Current() {
  std::lock_guard<std::mutex> l(mu_);
  return observed_;
}

std::vector<RestServer::Command> RestServer::TakeCommands() {
  std::vector<Command> out;
  std::lock_guard<std::mutex> l(mu_);
  out.swap(commands_);
  return out;
}

}  // namespace qbridge::cp
