// The config's bridge sections: one [bridges.mqtt.NAME] table (NanoMQ's key names and
// units: server, proto_ver, keepalive, quic_*, forwards, subscription, hybrid_servers, ssl)
// into the controlplane's BridgeConfig and the runtime's BridgeSettings, with every problem
// reported by key path.
#include "controlplane/config_reader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "mqtt/rewrite.h"
#include "mqtt/topic.h"

namespace qbridge::cp::config_detail {

void ReadQuic(Reader& r, const toml::table& t, const std::string& path, dp::QuicSettings* q) {
  if (auto v = r.Duration(t, path, "quic_idle_timeout")) q->idle_timeout_ns = *v;
  if (auto v = r.Duration(t, path, "quic_keepalive")) q->keepalive_ns = *v;
  if (auto v = r.Duration(t, path, "quic_handshake_timeout")) q->handshake_timeout_ns = *v;
  if (auto v = r.Duration(t, path, "quic_discon_timeout")) q->disconnect_timeout_ns = *v;
  if (auto v = r.Duration(t, path, "quic_initial_rtt_ms")) q->initial_rtt_ns = *v;
  if (auto v = r.Duration(t, path, "quic_max_ack_delay_ms")) {
    q->max_ack_delay_ns = std::min<uint64_t>(*v, 16'000 * dp::kMsNs);  // NanoMQ's clamp
  }
  if (auto v = r.Str(t, path, "quic_congestion_control")) {
    if (*v != "cubic" && *v != "bbr" && *v != "reno") {
      r.Error(Reader::Join(path, "quic_congestion_control"), "expected \"cubic\", \"bbr\" or \"reno\"");
    } else {
      q->congestion_control = *v;
    }
  }
}

void ReadBridge(Reader& r, const toml::table& t, const std::string& path, const std::string& name,
                const StoreDefaults& store, AppConfig* cfg) {
  r.Unknown(t, path,
            {"enable", "server", "proto_ver", "clientid", "username", "password", "keepalive",
             "clean_start", "backoff_max", "pingresp_timeout", "quic_keepalive",
             "quic_idle_timeout", "quic_handshake_timeout", "quic_discon_timeout",
             "quic_initial_rtt_ms", "quic_max_ack_delay_ms", "quic_congestion_control",
             "quic_0rtt", "quic_multi_stream", "quic_qos_priority", "quic_send_idle_timeout",
             "hybrid_bridging", "hybrid_servers", "ssl", "forwards", "subscription",
             "data_streams", "priorities", "worker", "no_local_v4", "max_parallel_processes",
             "resend_interval", "resend_wait", "cancel_timeout", "max_send_queue_len",
             "max_recv_queue_len", "store", "store_max_bytes", "store_max_messages", "store_qos0",
             "store_memory", "qos0_backpressure"});
  BridgeConfig b;
  dp::BridgeDialSettings d;
  b.name = name;
  d.name = name;
  b.client_id = absl::StrCat("qbridge-", name);
  d.quic.idle_timeout_ns = 120 * dp::kSecNs;  // NanoMQ's code defaults (4.2)
  d.quic.keepalive_ns = 60 * dp::kSecNs;
  d.quic.handshake_timeout_ns = 20 * dp::kSecNs;
  d.quic.disconnect_timeout_ns = 20 * dp::kSecNs;
  d.quic.initial_rtt_ns = 800 * dp::kMsNs;
  d.quic.max_ack_delay_ns = 100 * dp::kMsNs;
  d.quic.max_peer_bidi_streams = 0;  // upstreams never open streams (EMQX model)
  b.enabled = r.Bool(t, path, "enable").value_or(true);

  const std::optional<std::string> server = r.Str(t, path, "server");
  if (!server) {
    r.Error(Reader::Join(path, "server"), "required, e.g. \"mqtt-quic://broker:14567\"");
  } else if (auto u = ParseUpstream(r, Reader::Join(path, "server"), *server)) {
    d.ip = u->ip;
    d.port = u->port;
    d.tcp = u->tcp;
    d.tls_tcp = u->tls;
    d.tls.server_name = u->host;
  }
  d.proto_ver = 4;  // NanoMQ's default
  if (auto v = r.Int(t, path, "proto_ver", 3, 5)) {
    b.version = *v == 5 ? mqtt::Version::k5 : *v == 4 ? mqtt::Version::k311 : mqtt::Version::k31;
    d.proto_ver = int(*v);
  }
  if (auto v = r.Int(t, path, "max_send_queue_len", 1, 10'000'000)) d.max_queue = size_t(*v);
  if (auto v = r.Bool(t, path, "qos0_backpressure")) d.qos0_backpressure = *v;
  ReadBridgeStore(r, t, path, name, store, *cfg, &d);
  if (auto v = r.Str(t, path, "clientid")) b.client_id = *v;
  if (auto v = r.Str(t, path, "username")) b.username = *v;
  if (auto v = r.Str(t, path, "password")) b.password = *v;
  if (auto v = r.Duration(t, path, "keepalive")) {
    if (*v > 65535 * dp::kSecNs || (*v != 0 && *v < dp::kSecNs)) {
      r.Error(Reader::Join(path, "keepalive"), "must be 0 (off) or 1 s to 65535 s");
    } else {
      b.keepalive_s = uint16_t(*v / dp::kSecNs);
    }
  }
  if (auto v = r.Bool(t, path, "clean_start")) b.clean_start = *v;
  if (auto v = r.Bool(t, path, "no_local_v4")) b.bridge_bit = *v;
  if (auto v = r.Duration(t, path, "backoff_max")) b.backoff_max_ns = std::max<uint64_t>(*v, dp::kSecNs);
  if (auto v = r.Duration(t, path, "pingresp_timeout")) b.pingresp_timeout_ns = *v;
  ReadQuic(r, t, path, &d.quic);
  b.connect_timeout_ns = d.quic.handshake_timeout_ns + 10 * dp::kSecNs;
  if (auto v = r.Bool(t, path, "quic_0rtt")) d.zero_rtt = *v;
  if (r.Bool(t, path, "hybrid_bridging").value_or(false)) {
    const toml::array* hs = t.get_as<toml::array>("hybrid_servers");
    if (!hs || hs->empty()) {
      r.Error(Reader::Join(path, "hybrid_servers"), "required with hybrid_bridging = true");
    }
    for (size_t i = 0; hs && i < hs->size(); ++i) {
      const std::string hp = absl::StrCat(path, ".hybrid_servers[", i, "]");
      auto url = hs->get(i)->value<std::string>();
      if (!url) {
        r.Error(hp, "expected a URL string");
        continue;
      }
      if (server && *url == *server) continue;  // the primary is server 0 already
      auto u = ParseUpstream(r, hp, *url);
      if (!u) continue;
      // ssl.server_name, when set, applies to `server` only.
      d.hybrid.push_back(dp::BridgeDialSettings::Hybrid{
          .ip = u->ip, .port = u->port, .tcp = u->tcp, .tls = u->tls, .server_name = u->host});

    }
    b.servers = 1 + d.hybrid.size();
  }
  if (auto v = r.Int(t, path, "worker", 0, 1023)) {
    if (*v >= cfg->runtime.workers) {
      r.Error(Reader::Join(path, "worker"), "no such worker (see dataplane.workers)");
    } else {
      b.worker = uint16_t(*v);
      d.worker = uint16_t(*v);
    }
  }
  if (const toml::table* ssl = t.get_as<toml::table>("ssl")) {
    const std::string sp = Reader::Join(path, "ssl");
    r.Unknown(*ssl, sp, {"enable", "cacertfile", "certfile", "keyfile", "verify_peer", "server_name",
                         "key_password"});
    d.tls.cacertfile = PathKey(r, *ssl, sp, "cacertfile");
    d.tls.certfile = PathKey(r, *ssl, sp, "certfile");
    d.tls.keyfile = PathKey(r, *ssl, sp, "keyfile");
    if (auto v = r.Bool(*ssl, sp, "verify_peer")) d.tls.verify_peer = *v;
    if (auto v = r.Str(*ssl, sp, "server_name")) d.tls.server_name = *v;
    CheckReadable(r, Reader::Join(sp, "cacertfile"), d.tls.cacertfile);
    CheckReadable(r, Reader::Join(sp, "certfile"), d.tls.certfile);
    CheckReadable(r, Reader::Join(sp, "keyfile"), d.tls.keyfile);
    if (d.tls.certfile.empty() != d.tls.keyfile.empty()) {
      r.Error(sp, "certfile and keyfile go together (a client certificate needs both)");
    }
  }
  const bool any_tls = !d.tcp || d.tls_tcp ||
                       std::any_of(d.hybrid.begin(), d.hybrid.end(), [](const auto& h) { return !h.tcp || h.tls; });
  if (any_tls && d.tls.verify_peer && d.tls.cacertfile.empty()) {
    r.Error(Reader::Join(path, "ssl.cacertfile"),
            "required to verify the upstream's certificate (or set ssl.verify_peer = false, "
            "which trusts any server)");
  }
  int max_slot = 0;
  if (const toml::array* fw = t.get_as<toml::array>("forwards")) {
    for (size_t i = 0; i < fw->size(); ++i) {
      const std::string fp = absl::StrCat(path, ".forwards[", i, "]");
      const toml::table* e = fw->get(i)->as_table();
      if (!e) {
        r.Error(fp, "expected a table { local_topic = ..., remote_topic = ... }");
        continue;
      }
      r.Unknown(*e, fp, {"local_topic", "remote_topic", "qos", "retain", "prefix", "suffix", "stream"});
      BridgeForward f;
      auto local = r.Str(*e, fp, "local_topic");
      auto remote = r.Str(*e, fp, "remote_topic");
      if (!local) r.Error(Reader::Join(fp, "local_topic"), "required");
      if (!remote) r.Error(Reader::Join(fp, "remote_topic"), "required (\"\" keeps the topic)");
      if (!local || !remote) continue;
      f.local_topic = *local;
      f.remote_topic = *remote;
      f.qos = Qos(r, *e, fp).value_or(mqtt::QoS::k1);
      f.retain = r.Bool(*e, fp, "retain").value_or(false);
      f.prefix = r.Str(*e, fp, "prefix").value_or("");
      f.suffix = r.Str(*e, fp, "suffix").value_or("");
      f.slot = int(r.Int(*e, fp, "stream", 0, 8).value_or(0));
      max_slot = std::max(max_slot, f.slot);
      if (mqtt::ValidateTopicFilter(f.local_topic) != mqtt::ReasonCode::kSuccess) {
        r.Error(Reader::Join(fp, "local_topic"), absl::StrCat("'", f.local_topic, "' is not a valid topic filter"));
      } else if (auto rw = mqtt::TopicRewrite::Create(f.local_topic, f.remote_topic, f.prefix, f.suffix);
                 !rw.ok()) {
        r.Error(fp, std::string(rw.status().message()));
      }
      b.forwards.push_back(std::move(f));
    }
  }
  if (const toml::array* subs = t.get_as<toml::array>("subscription")) {
    for (size_t i = 0; i < subs->size(); ++i) {
      const std::string sp = absl::StrCat(path, ".subscription[", i, "]");
      const toml::table* e = subs->get(i)->as_table();
      if (!e) {
        r.Error(sp, "expected a table { remote_topic = ..., qos = ... }");
        continue;
      }
      r.Unknown(*e, sp, {"remote_topic", "local_topic", "qos", "retain", "retain_as_published",
                         "retain_handling", "nolocal", "prefix", "suffix", "stream", "stream_id"});
      BridgeSubscription s;
      auto remote = r.Str(*e, sp, "remote_topic");
      if (!remote) {
        r.Error(Reader::Join(sp, "remote_topic"), "required");
        continue;
      }
      s.topic = *remote;
      auto q = Qos(r, *e, sp);
      if (!q) r.Error(Reader::Join(sp, "qos"), "required (NanoMQ requires it too)");
      s.qos = q.value_or(mqtt::QoS::k1);
      s.local_topic = r.Str(*e, sp, "local_topic").value_or("");
      s.prefix = r.Str(*e, sp, "prefix").value_or("");
      s.suffix = r.Str(*e, sp, "suffix").value_or("");
      // The control stream by default: its subscriptions live on with the session.
      s.slot = int(r.Int(*e, sp, "stream", -1, 8).value_or(-1));
      max_slot = std::max(max_slot, s.slot);
      if (mqtt::ValidateTopicFilter(s.topic) != mqtt::ReasonCode::kSuccess) {
        r.Error(Reader::Join(sp, "remote_topic"), absl::StrCat("'", s.topic, "' is not a valid topic filter"));
      } else if (auto rw = mqtt::TopicRewrite::Create(s.topic, s.local_topic, s.prefix, s.suffix);
                 !rw.ok()) {
        r.Error(sp, std::string(rw.status().message()));
      }
      b.subscriptions.push_back(std::move(s));
    }
  }
  d.data_streams = int(r.Int(t, path, "data_streams", 1, 9).value_or(max_slot + 1));
  if (max_slot >= d.data_streams) {
    r.Error(Reader::Join(path, "data_streams"),
            absl::StrCat("a rule uses stream ", max_slot, " but only ", d.data_streams,
                         " data streams are opened"));
  }
  if (const toml::array* pr = t.get_as<toml::array>("priorities")) {
    for (size_t i = 0; i < pr->size(); ++i) {
      if (auto v = pr->get(i)->value<int64_t>()) {
        d.priorities.push_back(int(*v));
      } else {
        r.Error(absl::StrCat(path, ".priorities[", i, "]"), "expected an integer");
      }
    }
  }
  // The keepalive relations NanoMQ users get wrong (mqtt-over-quic.md 3.3).
  if (d.tcp) {
    // No QUIC: nothing races the MQTT keepalive.
  } else if (absl::Status s = ValidateBridgeTimers(name, uint64_t(b.keepalive_s) * dp::kSecNs,
                                            d.quic.keepalive_ns, d.quic.idle_timeout_ns);
      !s.ok()) {
    r.Error(path, std::string(s.message()));
  }
  if (b.pingresp_timeout_ns && b.keepalive_s &&
      b.pingresp_timeout_ns >= uint64_t(b.keepalive_s) * dp::kSecNs) {
    r.Error(Reader::Join(path, "pingresp_timeout"), "must be shorter than keepalive");
  }
  cfg->control.bridges.push_back(std::move(b));
  cfg->runtime.bridges.push_back(std::move(d));
}

}  // namespace qbridge::cp::config_detail
