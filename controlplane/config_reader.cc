// The config parser's shared value helpers (declared in config_reader.h).
#include "controlplane/config_reader.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace qbridge::cp::config_detail {

thread_local std::string g_config_dir;
thread_local ConfigChecks g_checks;

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

std::optional<uint64_t> ParseBytes(std::string_view text) {
  size_t i = 0;
  uint64_t v = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (v > (UINT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + uint64_t(text[i] - '0');
  }
  if (i == 0) return std::nullopt;
  std::string unit;
  for (char ch : text.substr(i)) unit.push_back(char(std::toupper(static_cast<unsigned char>(ch))));
  if (unit.ends_with("B")) unit.pop_back();
  int shift = 0;
  if (unit == "K") shift = 10;
  else if (unit == "M") shift = 20;
  else if (unit == "G") shift = 30;
  else if (unit == "T") shift = 40;
  else if (!unit.empty()) return std::nullopt;
  if (shift && v > (UINT64_MAX >> shift)) return std::nullopt;
  return v << shift;
}

bool IsIpLiteral(const std::string& h) {
  in6_addr a;
  return ::inet_pton(AF_INET, h.c_str(), &a) == 1 || ::inet_pton(AF_INET6, h.c_str(), &a) == 1;
}

namespace {

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

}  // namespace

std::string PathKey(Reader& r, const toml::table& t, const std::string& path, const char* key) {
  auto v = r.Str(t, path, key);
  return v ? ExpandPath(r, Reader::Join(path, key), *v) : std::string();
}

std::optional<Upstream> ParseUpstream(Reader& r, const std::string& key, const std::string& url) {
  Upstream u;
  std::string rest;
  if (url.starts_with("mqtt-quic://")) {
    rest = url.substr(12);
  } else if (url.starts_with("mqtt-tcp://")) {
    rest = url.substr(11);
    u.tcp = true;
  } else if (url.starts_with("tls+mqtt-tcp://")) {
    rest = url.substr(15);
    u.tcp = u.tls = true;
  }
  u.port = u.tls ? 8883 : u.tcp ? 1883 : 14567;
  if (rest.empty() || (rest.find(':') == std::string::npos ? (u.host = rest, false)
                                                            : !ParseHostPort(rest, &u.host, &u.port))) {
    r.Error(key, "expected mqtt-quic://host:port, mqtt-tcp://host:port or tls+mqtt-tcp://host:port");
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

}  // namespace qbridge::cp::config_detail
