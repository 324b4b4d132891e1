#define TOML_EXCEPTIONS 0
// toml++ 3.3 asserts in parse_key() what it reports as a parse error right after
// ("[=" in a table header; found by config_fuzz): with assertions on (debug, fuzz and
// sanitizer builds) a typo in a config file would abort the process. Release builds compile
// the assertion out and report the error; make every build do that.
#define TOML_ASSERT(expr) static_assert(true)
#include "controlplane/config.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "mqtt/rewrite.h"
#include "mqtt/topic.h"

namespace qbridge::cp {
namespace {

// Collects problems by key path while reading a table.
class Reader {
 public:
  explicit Reader(std::vector<std::string>* errors) : errors_(errors) {}

  void Error(const std::string& path, const std::string& what) {
    errors_->push_back(absl::StrCat(path, ": ", what));
  }

  // Flags keys of `t` (at `path`) not in `known`: a typo must not silently keep a default.
  void Unknown(const toml::table& t, const std::string& path, std::initializer_list<const char*> known) {
    std::set<std::string> k(known.begin(), known.end());
    for (const auto& [key, node] : t) {
      if (!k.contains(std::string(key.str()))) {
        Error(Join(path, std::string(key.str())), "unknown key");
      }
    }
  }

  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : absl::StrCat(path, ".", key);
  }

  std::optional<std::string> Str(const toml::table& t, const std::string& path, const char* key) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (auto v = n->value<std::string>()) return *v;
    Error(Join(path, key), "expected a string");
    return std::nullopt;
  }
  std::optional<bool> Bool(const toml::table& t, const std::string& path, const char* key) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (auto v = n->value<bool>()) return *v;
    Error(Join(path, key), "expected true or false");
    return std::nullopt;
  }
  std::optional<int64_t> Int(const toml::table& t, const std::string& path, const char* key,
                             int64_t lo, int64_t hi) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    auto v = n->value<int64_t>();
    if (!v || *v < lo || *v > hi) {
      Error(Join(path, key), absl::StrCat("expected an integer from ", lo, " to ", hi));
      return std::nullopt;
    }
    return *v;
  }
  // A duration; a bare number is seconds, or milliseconds when the key ends in "_ms".
  std::optional<uint64_t> Duration(const toml::table& t, const std::string& path, const char* key) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    const bool ms = std::string_view(key).ends_with("_ms");
    if (auto i = n->value_exact<int64_t>()) {
      if (*i >= 0) return uint64_t(*i) * (ms ? dp::kMsNs : dp::kSecNs);
    } else if (auto f = n->value_exact<double>()) {
      if (*f >= 0) return uint64_t(*f * double(ms ? dp::kMsNs : dp::kSecNs));
    } else if (auto s = n->value<std::string>()) {
      if (auto d = ParseDuration(*s)) return *d;
    }
    Error(Join(path, key), "expected a duration such as \"2s\", \"800ms\" or \"2m\"");
    return std::nullopt;
  }

 private:
  std::vector<std::string>* errors_;
};

// "ip:port" (or "[v6]:port"); the port may be 0 (any).
bool ParseHostPort(const std::string& s, std::string* host, uint16_t* port) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string h = s.substr(0, colon);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  uint32_t p;
  if (!absl::SimpleAtoi(s.substr(colon + 1), &p) || p > 65535) return false;
  *host = h;
  *port = uint16_t(p);
  return true;
}

bool IsIpLiteral(const std::string& h) {
  in6_addr a;
  return ::inet_pton(AF_INET, h.c_str(), &a) == 1 || ::inet_pton(AF_INET6, h.c_str(), &a) == 1;
}

// A host name to its first IPv4/IPv6 address (config time only).
std::optional<std::string> Resolve(const std::string& host) {
  if (IsIpLiteral(host)) return host;
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return std::nullopt;
  char buf[INET6_ADDRSTRLEN] = {};
  if (res->ai_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof(buf));
  } else {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr, buf, sizeof(buf));
  }
  ::freeaddrinfo(res);
  return std::string(buf);
}

// The directory relative file names in the config are resolved against.
thread_local std::string g_config_dir;
thread_local ConfigChecks g_checks;

// "${VAR}" from the environment (NanoMQ's HOCON allows the same), then a relative path is
// taken relative to the config file's directory.
std::string ExpandPath(Reader& r, const std::string& key_path, const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size();) {
    if (in.compare(i, 2, "${") == 0) {
      const size_t end = in.find('}', i);
      if (end == std::string::npos) {
        r.Error(key_path, "unterminated ${");
        return in;
      }
      const std::string var = in.substr(i + 2, end - i - 2);
      const char* v = std::getenv(var.c_str());
      if (v == nullptr) {
        r.Error(key_path, absl::StrCat("environment variable ", var, " is not set"));
        return in;
      }
      out += v;
      i = end + 1;
    } else {
      out.push_back(in[i++]);
    }
  }
  if (!out.empty() && out[0] != '/' && !g_config_dir.empty()) out = g_config_dir + "/" + out;
  return out;
}

std::string PathKey(Reader& r, const toml::table& t, const std::string& path, const char* key) {
  auto v = r.Str(t, path, key);
  return v ? ExpandPath(r, Reader::Join(path, key), *v) : std::string();
}

// An upstream's URL, as NanoMQ writes them: mqtt-quic://host[:port] (14567) or
// mqtt-tcp://host[:port] (1883). Errors are reported at `key`; nullopt then.
struct Upstream {
  std::string host, ip;
  uint16_t port = 0;
  bool tcp = false;
};
std::optional<Upstream> ParseUpstream(Reader& r, const std::string& key, const std::string& url) {
  Upstream u;
  std::string rest;
  if (url.starts_with("mqtt-quic://")) {
    rest = url.substr(12);
  } else if (url.starts_with("mqtt-tcp://")) {
    rest = url.substr(11);
    u.tcp = true;
  } else if (url.starts_with("tls+mqtt-tcp://")) {
    r.Error(key, "MQTT over TLS/TCP upstreams are not built yet; use mqtt-quic:// or mqtt-tcp://");
    return std::nullopt;
  }
  u.port = u.tcp ? 1883 : 14567;
  if (rest.empty() || (rest.find(':') == std::string::npos ? (u.host = rest, false)
                                                            : !ParseHostPort(rest, &u.host, &u.port))) {
    r.Error(key, "expected mqtt-quic://host:port or mqtt-tcp://host:port");
    return std::nullopt;
  }
  auto ip = g_checks.resolve ? Resolve(u.host) : std::optional<std::string>(u.host);
  if (!ip) {
    r.Error(key, absl::StrCat("cannot resolve '", u.host, "'"));
    return std::nullopt;
  }
  u.ip = *ip;
  return u;
}

void CheckReadable(Reader& r, const std::string& path, const std::string& file) {
  if (!g_checks.files || file.find("${") != std::string::npos) return;  // already reported
  if (!file.empty() && ::access(file.c_str(), R_OK) != 0) {
    r.Error(path, absl::StrCat("cannot read '", file, "'"));
  }
}

std::optional<mqtt::QoS> Qos(Reader& r, const toml::table& t, const std::string& path) {
  auto q = r.Int(t, path, "qos", 0, 2);
  if (!q) return std::nullopt;
  return static_cast<mqtt::QoS>(*q);
}

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
                AppConfig* cfg) {
  r.Unknown(t, path,
            {"enable", "server", "proto_ver", "clientid", "username", "password", "keepalive",
             "clean_start", "backoff_max", "pingresp_timeout", "quic_keepalive",
             "quic_idle_timeout", "quic_handshake_timeout", "quic_discon_timeout",
             "quic_initial_rtt_ms", "quic_max_ack_delay_ms", "quic_congestion_control",
             "quic_0rtt", "quic_multi_stream", "quic_qos_priority", "quic_send_idle_timeout",
             "hybrid_bridging", "hybrid_servers", "ssl", "forwards", "subscription",
             "data_streams", "priorities", "worker", "no_local_v4", "max_parallel_processes",
             "resend_interval", "resend_wait", "cancel_timeout", "max_send_queue_len",
             "max_recv_queue_len"});
  BridgeConfig b;
  dp::BridgeDialSettings d;
  b.name = name;
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
    d.tls.server_name = u->host;
  }
  d.proto_ver = 4;  // NanoMQ's default
  if (auto v = r.Int(t, path, "proto_ver", 3, 5)) {
    b.version = *v == 5 ? mqtt::Version::k5 : *v == 4 ? mqtt::Version::k311 : mqtt::Version::k31;
    d.proto_ver = int(*v);
  }
  if (auto v = r.Int(t, path, "max_send_queue_len", 1, 10'000'000)) d.max_queue = size_t(*v);
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
      d.hybrid.push_back(dp::BridgeDialSettings::Hybrid{u->ip, u->port, u->tcp, u->host});

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
  if (!d.tcp && d.tls.verify_peer && d.tls.cacertfile.empty()) {
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

// toml++ 3.3 reaches __builtin_unreachable() when it classifies some non-ASCII characters
// (U+FEC7 and others, found by config_fuzz): undefined behaviour on a config typo. So toml++
// only ever sees ASCII: non-ASCII text in basic strings ("...") becomes \u escapes (the same
// value), in comments '?', and anywhere else it is refused with its line.
absl::StatusOr<std::string> ToAscii(std::string_view t, std::string_view source) {
  std::string out;
  out.reserve(t.size());
  int line = 1;
  auto refuse = [&](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ":", line, ": ", what));
  };
  for (size_t i = 0; i < t.size();) {
    const char c = t[i];
    if (c == '\n') {
      ++line;
      out.push_back(c);
      ++i;
    } else if (c == '#') {  // a comment runs to the end of the line
      while (i < t.size() && t[i] != '\n') {
        out.push_back(static_cast<unsigned char>(t[i]) >= 0x80 ? '?' : t[i]);
        ++i;
      }
    } else if (c == '"' || c == '\'') {
      const bool multi = t.compare(i, 3, std::string(3, c)) == 0;
      const size_t open = multi ? 3 : 1;
      out.append(t.substr(i, open));
      i += open;
      while (i < t.size()) {
        const unsigned char b = static_cast<unsigned char>(t[i]);
        if (b == '\n') {
          if (!multi) break;  // unterminated: toml++ reports it
          ++line;
        }
        if (c == '"' && b == '\\' && i + 1 < t.size()) {
          out.append(t.substr(i, 2));
          i += 2;
          continue;
        }
        if (b == static_cast<unsigned char>(c) && (!multi || t.compare(i, 3, std::string(3, c)) == 0)) {
          out.append(t.substr(i, open));
          i += open;
          break;
        }
        if (b < 0x80) {
          out.push_back(char(b));
          ++i;
          continue;
        }
        if (c == '\'') return refuse("non-ASCII text in a literal string: use a \"basic\" string");
        // One UTF-8 sequence to a \u or \U escape.
        const size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0;
        if (n == 0 || i + n > t.size()) return refuse("invalid UTF-8");
        uint32_t cp = b & (0xFF >> (n + 1));
        for (size_t k = 1; k < n; ++k) {
          const unsigned char cb = static_cast<unsigned char>(t[i + k]);
          if ((cb & 0xC0) != 0x80) return refuse("invalid UTF-8");
          cp = cp << 6 | (cb & 0x3F);
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp < 0x80) return refuse("invalid UTF-8");
        out += cp > 0xFFFF ? absl::StrFormat("\\U%08X", cp) : absl::StrFormat("\\u%04X", cp);
        i += n;
      }
    } else if (static_cast<unsigned char>(c) >= 0x80) {
      return refuse("a non-ASCII character outside a string or comment");
    } else {
      out.push_back(c);
      ++i;
    }
  }
  return out;
}

}  // namespace

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
  r.Unknown(root, "", {"dataplane", "listeners", "http_server", "auth", "mqtt", "bridges"});

  if (const toml::table* dp_t = root.get_as<toml::table>("dataplane")) {
    r.Unknown(*dp_t, "dataplane", {"backend", "workers", "local_ip", "idle_sleep_us", "eal_args",
                                   "port_id", "address", "gateway", "rx_desc", "tx_desc", "mbufs",
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
    r.Unknown(*ls, "listeners", {"quic", "tcp"});
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
        l.tls.certfile = PathKey(r, *q, p, "certfile");
        l.tls.keyfile = PathKey(r, *q, p, "keyfile");
        l.tls.cacertfile = PathKey(r, *q, p, "cacertfile");
        if (auto v = r.Bool(*q, p, "verify_peer")) l.tls.verify_peer = *v;
        if (l.tls.certfile.empty()) r.Error(p + ".certfile", "required (the server's certificate)");
        if (l.tls.keyfile.empty()) r.Error(p + ".keyfile", "required (the certificate's key)");
        CheckReadable(r, p + ".certfile", l.tls.certfile);
        CheckReadable(r, p + ".keyfile", l.tls.keyfile);
        CheckReadable(r, p + ".cacertfile", l.tls.cacertfile);
        if (l.tls.verify_peer && l.tls.cacertfile.empty()) {
          r.Error(p + ".cacertfile", "required with verify_peer = true (client certificates are checked against it)");
        }
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
    r.Unknown(*m, "mqtt", {"session_expiry_max", "max_inflight", "max_mqueue_len"});
    if (auto v = r.Int(*m, "mqtt", "max_mqueue_len", 1, 1 << 20)) cfg.runtime.max_mqueue_len = size_t(*v);
    // EMQX's name (NanoMQ has none yet): the Receive Maximum announced to MQTT 5 clients.
    if (auto v = r.Int(*m, "mqtt", "max_inflight", 1, 65535)) cfg.control.south.receive_maximum = uint16_t(*v);
    if (auto v = r.Duration(*m, "mqtt", "session_expiry_max")) {
      cfg.control.south.session_expiry_max_s = uint32_t(std::min<uint64_t>(*v / dp::kSecNs, UINT32_MAX));
    }
  }

  if (const toml::table* bs = root.get_as<toml::table>("bridges")) {
    r.Unknown(*bs, "bridges", {"mqtt"});
    if (const toml::table* mq = bs->get_as<toml::table>("mqtt")) {
      for (const auto& [key, node] : *mq) {
        const std::string name(key.str());
        const std::string path = absl::StrCat("bridges.mqtt.", name);
        if (const toml::table* b = node.as_table()) {
          ReadBridge(r, *b, path, name, &cfg);
        } else {
          r.Error(path, "expected a table");
        }
      }
    }
  }
  if (!cfg.runtime.listener && !cfg.runtime.tcp_listener && cfg.control.bridges.empty()) {
    r.Error("listeners.quic", "nothing to do: configure a listener, a bridge, or both");
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ":\n  ", absl::StrJoin(errors, "\n  ")));
  }
  return cfg;
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
