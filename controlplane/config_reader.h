// Private to the config parser's files (config.cc, config_bridges.cc, config_reader.cc):
// the key-path-aware reader over a toml++ table, and the value helpers every section
// shares (host:port, upstream URLs, paths with ${VAR}, readable files, QoS). Nothing else
// includes it (tools/check_includes.sh), so toml++ stays inside the parser.
#pragma once

#define TOML_EXCEPTIONS 0
// toml++ 3.3 asserts in parse_key() what it reports as a parse error right after
// ("[=" in a table header; found by config_fuzz): with assertions on (debug, fuzz and
// sanitizer builds) a typo in a config file would abort the process. Release builds compile
// the assertion out and report the error; make every build do that.
#define TOML_ASSERT(expr) static_assert(true)
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "controlplane/config.h"
#include "mqtt/types.h"

namespace qbridge::cp::config_detail {

// "123", "512KB", "64MB", "1GB" (KB/MB/GB are powers of 1024; B optional); nullopt when
// malformed or too large.
std::optional<uint64_t> ParseBytes(std::string_view text);

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
  // A size in bytes: an integer, or a string with a unit ("512KB", "64MB", "1GB": powers of
  // 1024, as NanoMQ reads them). At least `lo`.
  std::optional<uint64_t> Bytes(const toml::table& t, const std::string& path, const char* key,
                                uint64_t lo) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    std::optional<uint64_t> v;
    if (auto i = n->value_exact<int64_t>()) {
      if (*i >= 0) v = uint64_t(*i);
    } else if (auto s = n->value<std::string>()) {
      v = ParseBytes(*s);
    }
    if (!v || *v < lo) {
      Error(Join(path, key), absl::StrCat("expected a size of at least ", lo,
                                          " bytes: an integer or a string such as \"64MB\" or \"1GB\""));
      return std::nullopt;
    }
    return v;
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
bool ParseHostPort(const std::string& s, std::string* host, uint16_t* port);
bool IsIpLiteral(const std::string& h);

// The directory relative file names in the config are resolved against, and what the
// parse checks on this machine (set by LoadConfig and ParseConfig for the calling thread).
extern thread_local std::string g_config_dir;
extern thread_local ConfigChecks g_checks;

// `t[key]` at `path` as a path: "${VAR}" expanded from the environment, then taken
// relative to the config file's directory. Empty when absent.
std::string PathKey(Reader& r, const toml::table& t, const std::string& path, const char* key);

// An upstream's URL, as NanoMQ writes them: mqtt-quic://host[:port] (14567),
// mqtt-tcp://host[:port] (1883) or tls+mqtt-tcp://host[:port] (8883). Errors are reported
// at `key`; nullopt then.
struct Upstream {
  std::string host, ip;
  uint16_t port = 0;
  bool tcp = false;
  bool tls = false;  // with tcp
};
std::optional<Upstream> ParseUpstream(Reader& r, const std::string& key, const std::string& url);

// Reports `file` at `path` when it cannot be read (only with ConfigChecks::files).
void CheckReadable(Reader& r, const std::string& path, const std::string& file);
std::optional<mqtt::QoS> Qos(Reader& r, const toml::table& t, const std::string& path);

// Only ASCII reaches toml++ (see config_reader.cc for why).
absl::StatusOr<std::string> ToAscii(std::string_view t, std::string_view source);

// Sections with their own file.
void ReadQuic(Reader& r, const toml::table& t, const std::string& path, dp::QuicSettings* q);
// What [bridges.sqlite] (NanoMQ's disk cache, docs/store.md) sets for every bridge that does
// not say otherwise.
struct StoreDefaults {
  bool store = false;
  std::optional<uint64_t> max_messages;
};
void ReadStore(Reader& r, const toml::table& root, AppConfig* cfg, StoreDefaults* defaults);
// A bridge's store keys (store, store_max_bytes, store_max_messages, store_qos0, store_memory).
void ReadBridgeStore(Reader& r, const toml::table& t, const std::string& path, const std::string& name,
                     const StoreDefaults& defaults, const AppConfig& cfg, dp::BridgeDialSettings* d);
void ReadBridge(Reader& r, const toml::table& t, const std::string& path, const std::string& name,
                const StoreDefaults& store, AppConfig* cfg);

}  // namespace qbridge::cp::config_detail
