#include "controlplane/password.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace qbridge::cp {
namespace {

constexpr std::string_view kScheme = "pbkdf2-sha256";
constexpr size_t kHashLen = 32;
constexpr uint32_t kMaxIterations = 10'000'000;

struct Parsed {
  uint32_t iterations = 0;
  std::string salt, hash;
};

bool Parse(std::string_view stored, Parsed* out) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(stored.data(), stored.size()), '$');
  if (parts.size() != 4 || parts[0] != absl::string_view(kScheme.data(), kScheme.size())) return false;
  if (!absl::SimpleAtoi(parts[1], &out->iterations) || out->iterations == 0 ||
      out->iterations > kMaxIterations)
    return false;
  if (!absl::Base64Unescape(parts[2], &out->salt) || out->salt.size() < 8) return false;
  if (!absl::Base64Unescape(parts[3], &out->hash) || out->hash.size() != kHashLen) return false;
  return true;
}

bool Derive(std::string_view password, std::string_view salt, uint32_t iterations, uint8_t* out) {
  const gnutls_datum_t key{reinterpret_cast<unsigned char*>(const_cast<char*>(password.data())),
                           unsigned(password.size())};
  const gnutls_datum_t s{reinterpret_cast<unsigned char*>(const_cast<char*>(salt.data())),
                         unsigned(salt.size())};
  return gnutls_pbkdf2(GNUTLS_MAC_SHA256, &key, &s, iterations, out, kHashLen) == 0;
}

}  // namespace

absl::StatusOr<std::string> HashPassword(std::string_view password, uint32_t iterations) {
  if (iterations == 0 || iterations > kMaxIterations) {
    return absl::InvalidArgumentError("iterations out of range");
  }
  uint8_t salt[16];
  if (!RandomKey(salt, sizeof(salt))) return absl::InternalError("no random salt");
  uint8_t hash[kHashLen];
  const std::string_view salt_view(reinterpret_cast<const char*>(salt), sizeof(salt));
  if (!Derive(password, salt_view, iterations, hash)) return absl::InternalError("pbkdf2 failed");
  return absl::StrCat(std::string(kScheme), "$", iterations, "$",
                      absl::Base64Escape(absl::string_view(salt_view.data(), salt_view.size())), "$",
                      absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(hash),
                                                           kHashLen)));
}

bool VerifyPassword(std::string_view stored, std::string_view password) {
  Parsed p;
  if (!Parse(stored, &p)) return false;
  uint8_t hash[kHashLen];
  if (!Derive(password, p.salt, p.iterations, hash)) return false;
  uint8_t diff = 0;
  for (size_t i = 0; i < kHashLen; ++i) diff |= uint8_t(hash[i] ^ uint8_t(p.hash[i]));
  return diff == 0;
}

bool IsPasswordHash(std::string_view stored) {
  Parsed p;
  return Parse(stored, &p);
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  uint8_t out[32];
  if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, key.data(), key.size(), data.data(), data.size(), out) != 0) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(out), sizeof(out));
}

bool RandomKey(uint8_t* dest, size_t len) { return gnutls_rnd(GNUTLS_RND_KEY, dest, len) == 0; }

}  // namespace qbridge::cp
