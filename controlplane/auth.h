// MQTT username/password authentication against a user file of hashed secrets:
//
//   # comment
//   alice:pbkdf2-sha256$20000$<salt>$<hash>
//
// (`qbridge --hash-password` prints the second part). PBKDF2 is slow on purpose, and the
// controlplane core must not stall its keepalive timers on a reconnect storm, so a
// successful check is remembered as an HMAC of (user, password) under a per-process key:
// a device reconnecting with the same credentials costs one HMAC, not a PBKDF2.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace qbridge::cp {

class UserTable {
 public:
  // Parses the file's text; errors name `source` and the line.
  static absl::StatusOr<std::shared_ptr<UserTable>> Parse(std::string_view text,
                                                          std::string_view source);
  static absl::StatusOr<std::shared_ptr<UserTable>> Load(const std::string& path);

  bool Check(std::string_view user, std::string_view password);
  size_t size() const { return users_.size(); }
  uint64_t slow_checks() const { return slow_checks_; }

 private:
  UserTable();
  absl::flat_hash_map<std::string, std::string> users_;  // user -> stored hash
  absl::flat_hash_set<std::string> verified_;             // HMAC(user \0 password)
  std::string cache_key_;
  uint64_t slow_checks_ = 0;
};

}  // namespace qbridge::cp
