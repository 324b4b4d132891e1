#include "mqtt/topic.h"

#include <cstring>

#include "mqtt/wire.h"

namespace qbridge::mqtt {
namespace {
constexpr std::string_view kSharePrefix = "$share/";
}  // namespace

bool HasWildcard(std::string_view s) {
  if (s.empty()) return false;  // data() may be null, which memchr must not see
  return std::memchr(s.data(), '+', s.size()) || std::memchr(s.data(), '#', s.size());
}

ReasonCode ValidateTopicName(std::string_view topic) {
  if (topic.empty() || HasWildcard(topic) || !IsValidMqttUtf8(topic))
    return ReasonCode::kTopicNameInvalid;
  return ReasonCode::kSuccess;
}

namespace {
bool ValidPlainFilter(std::string_view filter) {
  if (filter.empty()) return false;
  TopicLevels levels(filter);
  size_t depth = 0;
  while (!levels.done()) {
    if (++depth > kMaxTopicLevels) return false;
    const std::string_view level = levels.Next();
    if (level == "#") {
      if (!levels.done()) return false;  // '#' must be the last level
    } else if (level != "+" && HasWildcard(level)) {
      return false;  // a wildcard sharing a level with other characters
    }
  }
  return true;
}
}  // namespace

ReasonCode ParseFilter(std::string_view filter, ParsedFilter* out) {
  if (!IsValidMqttUtf8(filter)) return ReasonCode::kTopicFilterInvalid;
  ParsedFilter parsed{{}, filter};
  if (filter.starts_with(kSharePrefix)) {
    std::string_view rest = filter.substr(kSharePrefix.size());
    const size_t slash = rest.find('/');
    if (slash == 0 || slash == std::string_view::npos) return ReasonCode::kTopicFilterInvalid;
    parsed.share_group = rest.substr(0, slash);
    if (HasWildcard(parsed.share_group)) return ReasonCode::kTopicFilterInvalid;
    parsed.filter = rest.substr(slash + 1);
  }
  if (!ValidPlainFilter(parsed.filter)) return ReasonCode::kTopicFilterInvalid;
  *out = parsed;
  return ReasonCode::kSuccess;
}

ReasonCode ValidateTopicFilter(std::string_view filter) {
  ParsedFilter unused;
  return ParseFilter(filter, &unused);
}

bool TopicMatches(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic[0] == '$' && !filter.empty() && (filter[0] == '+' || filter[0] == '#'))
    return false;
  TopicLevels f(filter), t(topic);
  while (!f.done()) {
    const std::string_view fl = f.Next();
    if (fl == "#") return true;  // matches the parent level and everything below
    if (t.done()) return false;
    const std::string_view tl = t.Next();
    if (fl != "+" && fl != tl) return false;
  }
  return t.done();
}

}  // namespace qbridge::mqtt
