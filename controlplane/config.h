// The appliance's configuration: one TOML file with NanoMQ's bridge key names and units, so a
// NanoMQ user's `bridges.mqtt.NAME` block carries over (mqtt-over-quic.md 4). Parsed once
// into plain structs; Validate reports every problem by key path, not just the first.
//
// Durations are strings as NanoMQ writes them ("2s", "800ms", "2m", "1h") or numbers:
// seconds, except for keys ending in `_ms`, which are milliseconds.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controlplane/controlplane.h"
#include "dataplane/api/runtime.h"

namespace qbridge::cp {

struct HttpServerConfig {
  std::string ip = "127.0.0.1";
  uint16_t port = 8081;
  std::string username = "admin";
  std::string password;  // required: the REST API is never open
  bool operator==(const HttpServerConfig&) const = default;
};

struct AppConfig {
  std::string source;             // the file it came from
  dp::RuntimeConfig runtime;      // [dataplane], [listeners.quic], the bridges' QUIC side
  ControlplaneConfig control;     // sessions, keepalive, the bridges' MQTT side
  std::optional<HttpServerConfig> http;
  std::string users_file;         // [auth] password_file
  // What was accepted but does not mean here what it means to NanoMQ (--check-config prints
  // these; the appliance logs them at start).
  std::vector<std::string> notes;
  std::string masked;  // the file as parsed, written back as TOML, secrets masked (REST shows it)
};

struct ConfigChecks {
  bool files = true;    // certificate and user files must be readable
  bool resolve = true;  // bridge host names must resolve
};

// Parses and validates; the error lists every problem as "key.path: what and how to fix".
absl::StatusOr<AppConfig> ParseConfig(std::string_view toml_text, std::string_view source,
                                      ConfigChecks checks = {});
absl::StatusOr<AppConfig> LoadConfig(const std::string& path, ConfigChecks checks = {});

// "host:port", with an IPv6 literal in brackets ("[::1]:14567"), as URLs and logs write it.
std::string HostPort(std::string_view host, int port);
// A bridge's URL scheme, NanoMQ's spelling: "mqtt-quic", "mqtt-tcp" or "tls+mqtt-tcp".
const char* UpstreamScheme(const dp::BridgeDialSettings& d);

// --check-config's verdict on a configuration that loaded: "OK (2 bridges, ...)".
std::string CheckSummary(const AppConfig& c);

// "2s" / "800ms" / "2m" / "1h" / "1.5s" in nanoseconds; nullopt when malformed.
std::optional<uint64_t> ParseDuration(std::string_view text);

}  // namespace qbridge::cp
