#include "controlplane/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "controlplane/password.h"

namespace qbridge::cp {

UserTable::UserTable() = default;

absl::StatusOr<std::shared_ptr<UserTable>> UserTable::Parse(std::string_view text,
                                                            std::string_view source) {
  std::shared_ptr<UserTable> t(new UserTable());
  uint8_t key[32];
  if (!RandomKey(key, sizeof(key))) return absl::InternalError("no random key for the login cache");
  t->cache_key_.assign(reinterpret_cast<const char*>(key), sizeof(key));
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t colon = line.find(':');
    const std::string where = absl::StrCat(std::string(source), ":", line_no);
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected user:hash"));
    }
    const std::string user(absl::StripAsciiWhitespace(line.substr(0, colon)));
    const std::string hash(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    if (!IsPasswordHash(hash)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": the secret of '", user,
          "' is not a pbkdf2-sha256 hash (plain-text passwords are refused; make one with "
          "qbridge --hash-password)"));
    }
    if (!t->users_.emplace(user, hash).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": user '", user, "' appears twice"));
    }
  }
  return t;
}

absl::StatusOr<std::shared_ptr<UserTable>> UserTable::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the user file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

bool UserTable::Check(std::string_view user, std::string_view password) {
  auto it = users_.find(std::string(user));
  if (it == users_.end()) return false;
  const std::string tag = HmacSha256(cache_key_, absl::StrCat(std::string(user), std::string(1, '\0'),
                                                              std::string(password)));
  if (!tag.empty() && verified_.contains(tag)) return true;
  ++slow_checks_;
  if (!VerifyPassword(it->second, password)) return false;
  if (!tag.empty() && verified_.size() < 1'000'000) verified_.insert(tag);
  return true;
}

}  // namespace qbridge::cp
