// Password hashing for the MQTT user file (auth.h is its user; `qbridge --hash-password`
// makes entries): PBKDF2-HMAC-SHA256 through GnuTLS, called directly. In controlplane/ this
// is the only file that may use GnuTLS (tools/check_includes.sh); QUIC's TLS stays in quic/.
// Stored form, self-describing so the cost can rise later without breaking old entries:
//   pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qbridge::cp {

inline constexpr uint32_t kDefaultPasswordIterations = 20'000;

// A new stored form for `password` with a random 16-byte salt.
absl::StatusOr<std::string> HashPassword(std::string_view password,
                                         uint32_t iterations = kDefaultPasswordIterations);
// Whether `password` matches `stored` (constant-time compare). A malformed stored form never
// matches.
bool VerifyPassword(std::string_view stored, std::string_view password);
// Whether `stored` is a well-formed entry (for config validation).
bool IsPasswordHash(std::string_view stored);
// HMAC-SHA256 of `data` under `key` (32 bytes), for keyed caches.
std::string HmacSha256(std::string_view key, std::string_view data);
// `len` bytes from GnuTLS's key-grade random generator (salts, per-process secrets). False
// when the generator failed: `dest` then holds nothing to rely on.
[[nodiscard]] bool RandomKey(uint8_t* dest, size_t len);

}  // namespace qbridge::cp
