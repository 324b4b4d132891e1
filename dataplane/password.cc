#include "dataplane/api/password.h"

#include "quic/connection.h"
#include "quic/password.h"

namespace qbridge::dp {

absl::StatusOr<std::string> HashPassword(std::string_view password) {
  return quic::HashPassword(password);
}
bool VerifyPassword(std::string_view stored, std::string_view password) {
  return quic::VerifyPassword(stored, password);
}
bool IsPasswordHash(std::string_view stored) { return quic::IsPasswordHash(stored); }
std::string HmacSha256(std::string_view key, std::string_view data) {
  return quic::HmacSha256(key, data);
}
void RandomBytes(uint8_t* dest, size_t len) { quic::RandomBytes(dest, len); }

}  // namespace qbridge::dp
