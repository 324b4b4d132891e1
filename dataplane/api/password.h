// Password hashing as the controlplane may use it (quic/password.h does the work; the
// controlplane sees the dataplane's api only).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qbridge::dp {

absl::StatusOr<std::string> HashPassword(std::string_view password);
bool VerifyPassword(std::string_view stored, std::string_view password);
bool IsPasswordHash(std::string_view stored);
std::string HmacSha256(std::string_view key, std::string_view data);
void RandomBytes(uint8_t* dest, size_t len);

}  // namespace qbridge::dp
