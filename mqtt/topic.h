// Topic names and filters (spec 4.7): validation, matching, shared subscriptions.
#pragma once

#include <string_view>

#include "mqtt/types.h"

namespace qbridge::mqtt {

// kSuccess, or kTopicNameInvalid: empty, a wildcard, or not MQTT UTF-8.
ReasonCode ValidateTopicName(std::string_view topic);

// Filters deeper than this are refused, so a subscription trie's depth (and the recursion
// that walks it) stays bounded whatever a peer sends. EMQX's default max_topic_levels.
inline constexpr size_t kMaxTopicLevels = 128;

// kSuccess, or kTopicFilterInvalid: empty, '#' not alone as the last level, '+' not a
// whole level, more than kMaxTopicLevels levels, not MQTT UTF-8, or a malformed $share/
// filter (see ParseFilter).
ReasonCode ValidateTopicFilter(std::string_view filter);

// A subscription's filter split into its share group (empty when not shared) and the
// filter that is matched: "$share/g/a/+" -> {"g", "a/+"}.
struct ParsedFilter {
  std::string_view share_group;
  std::string_view filter;
  bool shared() const { return !share_group.empty(); }
};
// kSuccess with *out filled, or kTopicFilterInvalid. A share name must be at least one
// character without '/', '+' or '#', followed by a valid non-empty filter.
ReasonCode ParseFilter(std::string_view filter, ParsedFilter* out);

// Whether `topic` (a valid name) matches `filter` (a valid, non-shared filter). Filters
// beginning with a wildcard do not match topics beginning with '$' (spec 4.7.2).
bool TopicMatches(std::string_view filter, std::string_view topic);

bool HasWildcard(std::string_view s);

// Iterates the '/'-separated levels of a topic or filter; an empty string has one empty
// level, and "a/" has two levels, "a" and "".
class TopicLevels {
 public:
  explicit TopicLevels(std::string_view s) : rest_(s) {}
  bool done() const { return done_; }
  // Returns the next level; call only while !done().
  std::string_view Next() {
    const size_t slash = rest_.find('/');
    if (slash == std::string_view::npos) {
      done_ = true;
      return rest_;
    }
    const std::string_view level = rest_.substr(0, slash);
    rest_.remove_prefix(slash + 1);
    return level;
  }
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;
  bool done_ = false;
};

}  // namespace qbridge::mqtt
