// The config file: TOML with NanoMQ's key names and units, parsed once into AppConfig.
// This file reads the top-level sections ([listeners], [mqtt], [dataplane], [http_server],
// [auth], ...) and hands each bridge to config_bridges.cc; the shared helpers are in
// config_reader.{h,cc}. Every problem is reported by key path; a typo never keeps a default.
#include "controlplane/config_reader.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mqtt/topic.h"

namespace qbridge::cp {

using config_detail::CheckReadable;
using config_detail::g_checks;
using config_detail::g_config_dir;
using config_detail::IsIpLiteral;
using config_detail::ParseHostPort;
using config_detail::PathKey;
using config_detail::ReadBridge;
using config_detail::Reader;
using config_detail::ReadQuic;
using config_detail::ReadStore;
using config_detail::StoreDefaults;
using config_detail::ToAscii;

std::optional<uint64_t> ParseDuration(std::string_view text) {
  std::string s(text);
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return std::nullopt;
  double v;
  if (!absl::SimpleAtod(s.substr(0, i), &v) || v < 0 || !std::isfinite(v)) return std::nullopt;
  const std::string unit = s.substr(i);
  double scale;
  if (unit == "ms") scale = 1e6;
  else if (unit == "s" || unit.empty()) scale = 1e9;
  else if (unit == "m") scale = 60e9;
  else if (unit == "h") scale = 3600e9;
  else return std::nullopt;
  const double ns = v * scale;
  if (ns > 1e18) return std::nullopt;
  return uint64_t(ns);
}

namespace {

// Keys whose values are secrets, wherever they appear (http_server.password, a bridge's
// password, an ssl block's key_password).
bool SecretKey(std::string_view key) {
  const std::string lower = absl::AsciiStrToLower(std::string(key));
  for (const char* word : {"password", "passwd", "secret", "token"})
    if (lower.find(word) != std::string::npos) return true;
  return false;
}

void Mask(toml::node& n) {
  if (toml::table* t = n.as_table()) {
    std::vector<std::string> secrets;
    for (auto&& [k, v] : *t) {
      if (SecretKey(k.str())) {
        secrets.emplace_back(k.str());  // whatever its type: nothing under it is shown
      } else {
        Mask(v);
      }
    }
    for (const std::string& k : secrets) t->insert_or_assign(k, "******");
  } else if (toml::array* a = n.as_array()) {
    for (toml::node& e : *a) Mask(e);
  }
}

// The configuration as parsed, written back as TOML with every secret masked.
std::string MaskedToml(const toml::table& root) {
  toml::table copy = root;
  Mask(copy);
  std::ostringstream out;
  out << copy;
  return out.str();
}

// A server listener's certificate keys (QUIC and TLS listeners alike): certfile and keyfile
// required and readable; cacertfile required when verify_peer asks for client certificates.
void ReadServerTls(Reader& r, const toml::table& t, const std::string& p, dp::TlsFiles* tls) {
  tls->certfile = PathKey(r, t, p, "certfile");
  tls->keyfile = PathKey(r, t, p, "keyfile");
  tls->cacertfile = PathKey(r, t, p, "cacertfile");
  if (auto v = r.Bool(t, p, "verify_peer")) tls->verify_peer = *v;
  if (tls->certfile.empty()) r.Error(p + ".certfile", "required (the server's certificate)");
  if (tls->keyfile.empty()) r.Error(p + ".keyfile", "required (the certificate's key)");
  CheckReadable(r, p + ".certfile", tls->certfile);
  CheckReadable(r, p + ".keyfile", tls->keyfile);
  CheckReadable(r, p + ".cacertfile", tls->cacertfile);
  if (tls->verify_peer && tls->cacertfile.empty()) {
    r.Error(p + ".cacertfile", "required with verify_peer = true (client certificates are checked against it)");
  }
}

}  // namespace

absl::StatusOr<AppConfig> ParseConfig(std::string_view toml_text, std::string_view source,
                                      ConfigChecks checks) {
  g_checks = checks;
  absl::StatusOr<std::string> ascii = ToAscii(toml_text, source);
  if (!ascii.ok()) return ascii.status();
  toml::parse_result parsed = toml::parse(*ascii, source);
  if (!parsed) {
    const auto& e = parsed.error();
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ":", e.source().begin.line, ":",
                                                   e.source().begin.column, ": ",
                                                   std::string(e.description())));
  }
  const toml::table& root = parsed.table();
  std::vector<std::string> errors;
  Reader r(&errors);
  AppConfig cfg;
  cfg.source = std::string(source);
  r.Unknown(root, "", {"dataplane", "listeners", "http_server", "auth", "mqtt", "bridges", "store"});

  if (const toml::table* dp_t = root.get_as<toml::table>("dataplane")) {
    r.Unknown(*dp_t, "dataplane", {"backend", "workers", "local_ip", "idle_sleep_us", "eal_args",
                                   "port_id", "address", "gateway", "address6", "gateway6", "rx_desc", "tx_desc", "mbufs",
                                   "checksum_offload", "worker_cpus"});
    if (auto v = r.Str(*dp_t, "dataplane", "backend")) {
      if (*v != "socket" && *v != "dpdk") r.Error("dataplane.backend", "expected \"socket\" or \"dpdk\"");
      cfg.runtime.backend = *v;
    }
    if (auto v = r.Int(*dp_t, "dataplane", "workers", 1, 64)) cfg.runtime.workers = int(*v);
    if (auto v = r.Str(*dp_t, "dataplane", "local_ip")) cfg.runtime.local_ip = *v;
    if (auto v = r.Int(*dp_t, "dataplane", "idle_sleep_us", 0, 100'000)) cfg.runtime.idle_sleep_us = uint32_t(*v);
    if (auto v = r.Int(*dp_t, "dataplane", "port_id", 0, 1023)) cfg.runtime.port_id = uint16_t(*v);
    if (auto v = r.Str(*dp_t, "dataplane", "address")) cfg.runtime.address = *v;
    if (auto v = r.Str(*dp_t, "dataplane", "gateway")) cfg.runtime.gateway = *v;
    if (auto v = r.Str(*dp_t, "dataplane", "address6")) cfg.runtime.address6 = *v;
    if (auto v = r.Str(*dp_t, "dataplane", "gateway6")) cfg.runtime.gateway6 = *v;
    if (auto v = r.Int(*dp_t, "dataplane", "rx_desc", 64, 32768)) cfg.runtime.rx_desc = uint16_t(*v);
    if (auto v = r.Int(*dp_t, "dataplane", "tx_desc", 64, 32768)) cfg.runtime.tx_desc = uint16_t(*v);
    if (auto v = r.Int(*dp_t, "dataplane", "mbufs", 1023, 1 << 22)) cfg.runtime.mbufs = unsigned(*v);
    if (auto v = r.Bool(*dp_t, "dataplane", "checksum_offload")) cfg.runtime.checksum_offload = *v;
    if (dp_t->contains("worker_cpus")) {
      const toml::array* a = dp_t->get_as<toml::array>("worker_cpus");
      if (!a) r.Error("dataplane.worker_cpus", "expected an array of CPU numbers, one per worker");
      for (size_t i = 0; a && i < a->size(); ++i) {
        auto c = a->get(i)->value<int64_t>();
        if (!c || *c < 0 || *c > 1023) {
          r.Error(absl::StrCat("dataplane.worker_cpus[", i, "]"), "expected a CPU number (0-1023)");
        } else {
          cfg.runtime.worker_cpus.push_back(int(*c));
        }
      }
      if (a && a->size() != size_t(cfg.runtime.workers)) {
        r.Error("dataplane.worker_cpus", absl::StrCat("has ", a->size(), " entries for ",
                                                     cfg.runtime.workers, " workers (one CPU each)"));
      }
    }
    if (const toml::array* a = dp_t->get_as<toml::array>("eal_args")) {
      cfg.runtime.eal_args.push_back("qbridge");
      for (size_t i = 0; i < a->size(); ++i) {
        if (auto s = a->get(i)->value<std::string>()) {
          cfg.runtime.eal_args.push_back(*s);
        } else {
          r.Error(absl::StrCat("dataplane.eal_args[", i, "]"), "expected a string");
        }
      }
    }
    if (cfg.runtime.backend == "dpdk" && cfg.runtime.address.empty()) {
      r.Error("dataplane.address", "required with the dpdk backend, e.g. \"198.18.10.2/24\"");
    }
    if (cfg.runtime.backend == "dpdk" && cfg.runtime.eal_args.empty()) {
      r.Error("dataplane.eal_args", "required with the dpdk backend (the port's vdev or PCI address)");
    }
  }

  if (const toml::table* ls = root.get_as<toml::table>("listeners")) {
    r.Unknown(*ls, "listeners", {"quic", "tcp", "ssl"});
    if (const toml::table* tt = ls->get_as<toml::table>("tcp")) {
      r.Unknown(*tt, "listeners.tcp", {"enable", "bind"});
      if (r.Bool(*tt, "listeners.tcp", "enable").value_or(true)) {
        dp::RuntimeConfig::TcpListener l;
        if (auto v = r.Str(*tt, "listeners.tcp", "bind")) {
          if (!ParseHostPort(*v, &l.ip, &l.port) || !IsIpLiteral(l.ip)) {
            r.Error("listeners.tcp.bind", "expected \"ip:port\", e.g. \"0.0.0.0:1883\"");
          }
        }
        cfg.runtime.tcp_listener = l;
      }
    }
    if (const toml::table* st = ls->get_as<toml::table>("ssl")) {
      // NanoMQ's MQTT-over-TLS listener: its keys, its defaults (8883, no client certificates).
      const std::string p = "listeners.ssl";
      r.Unknown(*st, p, {"enable", "bind", "certfile", "keyfile", "cacertfile", "verify_peer",
                         "fail_if_no_peer_cert"});
      if (r.Bool(*st, p, "enable").value_or(true)) {
        dp::RuntimeConfig::TlsListener l;
        l.tls.verify_peer = false;
        if (auto v = r.Str(*st, p, "bind")) {
          if (!ParseHostPort(*v, &l.ip, &l.port) || !IsIpLiteral(l.ip)) {
            r.Error(p + ".bind", "expected \"ip:port\", e.g. \"0.0.0.0:8883\"");
          }
        }
        ReadServerTls(r, *st, p, &l.tls);
        if (auto v = r.Bool(*st, p, "fail_if_no_peer_cert")) l.fail_if_no_peer_cert = *v;
        if (l.fail_if_no_peer_cert && !l.tls.verify_peer) {
          r.Error(p + ".fail_if_no_peer_cert", "needs verify_peer = true (only then are client certificates asked for)");
        }
        cfg.runtime.tls_listener = l;
      }
    }
    if (const toml::table* q = ls->get_as<toml::table>("quic")) {
      const std::string p = "listeners.quic";
      r.Unknown(*q, p, {"enable", "bind", "certfile", "keyfile", "cacertfile", "verify_peer",
                        "max_streams", "retry", "max_connections", "quic_idle_timeout",
                        "quic_keepalive", "quic_handshake_timeout", "quic_discon_timeout",
                        "quic_initial_rtt_ms", "quic_max_ack_delay_ms", "quic_congestion_control",
                        "strict_control_stream_keepalive", "server_keepalive"});
      if (r.Bool(*q, p, "enable").value_or(true)) {
        dp::QuicListenerSettings l;
        l.tls.verify_peer = false;  // mTLS only when asked for
        l.quic.idle_timeout_ns = 0;  // EMQX's listener default: the client's value governs
        l.quic.handshake_timeout_ns = 10 * dp::kSecNs;
        l.quic.initial_rtt_ns = 333 * dp::kMsNs;
        l.quic.max_ack_delay_ns = 25 * dp::kMsNs;
        l.quic.disconnect_timeout_ns = 16 * dp::kSecNs;
        if (auto v = r.Str(*q, p, "bind")) {
          if (!ParseHostPort(*v, &l.ip, &l.port) || !IsIpLiteral(l.ip)) {
            r.Error(p + ".bind", "expected \"ip:port\", e.g. \"0.0.0.0:14567\"");
          }
        }
        ReadServerTls(r, *q, p, &l.tls);
        if (auto v = r.Int(*q, p, "max_streams", 1, 1000)) l.quic.max_peer_bidi_streams = uint64_t(*v);
        if (auto v = r.Str(*q, p, "retry")) {
          if (*v != "off" && *v != "always" && *v != "under_load") {
            r.Error(p + ".retry", "expected \"off\", \"always\" or \"under_load\"");
          }
          l.retry = *v;
        }
        if (auto v = r.Int(*q, p, "max_connections", 1, 10'000'000)) l.max_connections = size_t(*v);
        ReadQuic(r, *q, p, &l.quic);
        if (auto v = r.Bool(*q, p, "strict_control_stream_keepalive")) {
          cfg.control.south.strict_control_stream_keepalive = *v;
        }
        if (auto v = r.Duration(*q, p, "server_keepalive")) {
          cfg.control.south.server_keepalive_s = uint16_t(std::min<uint64_t>(*v / dp::kSecNs, 65535));
        }
        cfg.runtime.listener = l;
      }
    }
  }

  if (const toml::table* h = root.get_as<toml::table>("http_server")) {
    r.Unknown(*h, "http_server", {"enable", "bind", "port", "username", "password"});
    if (r.Bool(*h, "http_server", "enable").value_or(true)) {
      HttpServerConfig hs;
      if (auto v = r.Str(*h, "http_server", "bind")) {
        if (!ParseHostPort(*v, &hs.ip, &hs.port)) r.Error("http_server.bind", "expected \"ip:port\"");
      }
      if (auto v = r.Int(*h, "http_server", "port", 0, 65535)) hs.port = uint16_t(*v);
      if (auto v = r.Str(*h, "http_server", "username")) hs.username = *v;
      if (auto v = r.Str(*h, "http_server", "password")) hs.password = *v;
      if (hs.password.empty()) {
        r.Error("http_server.password", "required: the REST API always asks for HTTP Basic auth");
      }
      cfg.http = hs;
    }
  }

  if (const toml::table* a = root.get_as<toml::table>("auth")) {
    r.Unknown(*a, "auth", {"password_file", "allow_anonymous"});
    if (a->get("password_file")) {
      cfg.users_file = PathKey(r, *a, "auth", "password_file");
      CheckReadable(r, "auth.password_file", cfg.users_file);
    }
    if (auto v = r.Bool(*a, "auth", "allow_anonymous")) cfg.control.south.allow_anonymous = *v;
  }

  if (const toml::table* m = root.get_as<toml::table>("mqtt")) {
    r.Unknown(*m, "mqtt", {"session_expiry_max", "max_inflight", "max_mqueue_len", "shared_subscription_strategy"});
    if (auto v = r.Str(*m, "mqtt", "shared_subscription_strategy")) {
      if (*v == "round_robin") {
        cfg.control.south.share_strategy = dp::ShareStrategy::kRoundRobin;
      } else if (*v == "sticky") {
        cfg.control.south.share_strategy = dp::ShareStrategy::kSticky;
      } else {
        r.Error("mqtt.shared_subscription_strategy", "expected \"round_robin\" or \"sticky\"");
      }
    }
    if (auto v = r.Int(*m, "mqtt", "max_mqueue_len", 1, 1 << 20)) {
      cfg.runtime.max_mqueue_len = size_t(*v);
      cfg.control.south.max_mqueue_len = size_t(*v);  // offline sessions' queues too
    }
    // EMQX's name (NanoMQ has none yet): the Receive Maximum announced to MQTT 5 clients.
    if (auto v = r.Int(*m, "mqtt", "max_inflight", 1, 65535)) cfg.control.south.receive_maximum = uint16_t(*v);
    if (auto v = r.Duration(*m, "mqtt", "session_expiry_max")) {
      cfg.control.south.session_expiry_max_s = uint32_t(std::min<uint64_t>(*v / dp::kSecNs, UINT32_MAX));
    }
  }

  StoreDefaults store_defaults;
  ReadStore(r, root, &cfg, &store_defaults);  // [store] and NanoMQ's [bridges.sqlite]
  if (const toml::table* bs = root.get_as<toml::table>("bridges")) {
    r.Unknown(*bs, "bridges", {"mqtt", "sqlite"});
    if (const toml::table* mq = bs->get_as<toml::table>("mqtt")) {
      for (const auto& [key, node] : *mq) {
        const std::string name(key.str());
        const std::string path = absl::StrCat("bridges.mqtt.", name);
        if (const toml::table* b = node.as_table()) {
          ReadBridge(r, *b, path, name, store_defaults, &cfg);
        } else {
          r.Error(path, "expected a table");
        }
      }
    }
  }
  if (!cfg.runtime.listener && !cfg.runtime.tcp_listener && !cfg.runtime.tls_listener && cfg.control.bridges.empty()) {
    r.Error("listeners.quic", "nothing to do: configure a listener, a bridge, or both");
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ":\n  ", absl::StrJoin(errors, "\n  ")));
  }
  cfg.masked = MaskedToml(root);
  return cfg;
}

std::string HostPort(std::string_view host, int port) {
  return host.find(':') != std::string_view::npos ? absl::StrCat("[", std::string(host), "]:", port)
                                                  : absl::StrCat(std::string(host), ":", port);
}

const char* UpstreamScheme(const dp::BridgeDialSettings& d) {
  return !d.tcp ? "mqtt-quic" : d.tls_tcp ? "tls+mqtt-tcp" : "mqtt-tcp";
}

std::string CheckSummary(const AppConfig& c) {
  return absl::StrCat("OK (", c.control.bridges.size(), c.control.bridges.size() == 1 ? " bridge" : " bridges",
                      ", QUIC listener ", c.runtime.listener ? "on" : "off", ", ", c.runtime.backend,
                      " backend)");
}

absl::StatusOr<AppConfig> LoadConfig(const std::string& path, ConfigChecks checks) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the config file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const size_t slash = path.rfind('/');
  g_config_dir = slash == std::string::npos ? "." : path.substr(0, slash);
  auto c = ParseConfig(ss.str(), path, checks);
  g_config_dir.clear();
  return c;
}

}  // namespace qbridge::cp