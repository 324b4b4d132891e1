// Password hashing for the MQTT user file: PBKDF2-HMAC-SHA256 through GnuTLS (this module
// is the only one that links a crypto library). Stored form, self-describing so the cost
// can rise later without breaking old entries:
//   pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qbridge::quic {

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

}  // namespace qbridge::quic
