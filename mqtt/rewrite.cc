#include "mqtt/rewrite.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "mqtt/topic.h"

namespace qbridge::mqtt {
namespace {

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

int CountSlashes(std::string_view s) { return int(std::count(s.begin(), s.end(), '/')); }

}  // namespace

absl::StatusOr<TopicRewrite> TopicRewrite::Create(std::string_view source, std::string_view target,
                                                  std::string_view prefix,
                                                  std::string_view suffix) {
  ParsedFilter parsed;
  if (ParseFilter(source, &parsed) != ReasonCode::kSuccess)
    return absl::InvalidArgumentError(absl::StrCat("'", A(source), "' is not a valid topic filter"));
  // Topics that match "$share/g/f" are the topics of "f": anchor on that.
  source = parsed.filter;
  if (HasWildcard(prefix) || HasWildcard(suffix))
    return absl::InvalidArgumentError("prefix and suffix may not contain '+' or '#'");
  TopicRewrite r;
  r.prefix_ = std::string(prefix);
  r.suffix_ = std::string(suffix);
  r.target_ = std::string(target);
  if (target.empty()) {
    r.mode_ = Mode::kKeep;
    return r;
  }
  if (!HasWildcard(target)) {
    r.mode_ = Mode::kLiteral;
    return r;
  }
  const size_t hash = target.find('#');
  if (hash != std::string_view::npos && hash != target.size() - 1)
    return absl::InvalidArgumentError(
        absl::StrCat("'#' must be the last character of '", A(target), "'"));
  const size_t pos = source.find(target);
  if (pos == std::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat("'", A(target),
                                                   "' has a wildcard but is not part of the "
                                                   "filter '",
                                                   A(source), "'"));
  r.skip_levels_ = CountSlashes(source.substr(0, pos));
  if (pos + target.size() == source.size()) {
    r.mode_ = Mode::kRest;
  } else {
    r.mode_ = Mode::kLevels;
    r.keep_levels_ = 1 + CountSlashes(target);
  }
  return r;
}

std::optional<std::string> TopicRewrite::Apply(std::string_view topic) const {
  std::string out;
  if (!ApplyTo(topic, out)) return std::nullopt;
  return out;
}

bool TopicRewrite::ApplyTo(std::string_view topic, std::string& out) const {
  std::string_view middle;
  switch (mode_) {
    case Mode::kKeep: middle = topic; break;
    case Mode::kLiteral: middle = target_; break;
    case Mode::kRest:
    case Mode::kLevels: {
      std::string_view rest = topic;
      for (int i = 0; i < skip_levels_; ++i) {
        const size_t slash = rest.find('/');
        if (slash == std::string_view::npos) return false;
        rest.remove_prefix(slash + 1);
      }
      if (mode_ == Mode::kLevels) {
        size_t end = 0;
        for (int i = 0; i < keep_levels_; ++i) {
          const size_t slash = rest.find('/', end);
          if (slash == std::string_view::npos) {
            end = rest.size();
            break;
          }
          end = slash + (i + 1 < keep_levels_ ? 1 : 0);
        }
        rest = rest.substr(0, end);
      }
      middle = rest;
      break;
    }
  }
  out.clear();
  absl::StrAppend(&out, A(prefix_), A(middle), A(suffix_));
  return ValidateTopicName(out) == ReasonCode::kSuccess;
}

}  // namespace qbridge::mqtt
