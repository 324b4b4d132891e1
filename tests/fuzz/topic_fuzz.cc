// libFuzzer target for the topic parsers: filter validation and shared-subscription
// parsing, matching (the trie must agree with the direct matcher), and NanoMQ's rewrite
// rules (creation and application never crash; results are valid topic names).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mqtt/rewrite.h"
#include "mqtt/topic.h"
#include "mqtt/topic_trie.h"

using namespace qbridge::mqtt;

namespace {
void Check(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Input: filter '\n' topic '\n' rewrite-target.
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t a = in.find('\n');
  if (a == std::string_view::npos) return 0;
  const size_t b = in.find('\n', a + 1);
  const std::string_view filter = in.substr(0, a);
  const std::string_view topic = in.substr(a + 1, b == std::string_view::npos ? in.npos : b - a - 1);
  const std::string_view target = b == std::string_view::npos ? std::string_view() : in.substr(b + 1);

  ParsedFilter parsed;
  const bool filter_ok = ParseFilter(filter, &parsed) == ReasonCode::kSuccess;
  const bool topic_ok = ValidateTopicName(topic) == ReasonCode::kSuccess;
  if (filter_ok && topic_ok) {
    TopicTrie<int, int> trie;
    trie.Insert(parsed.filter, 1, 0);
    int hits = 0;
    trie.Match(topic, [&](const auto&) { ++hits; });
    Check(hits == (TopicMatches(parsed.filter, topic) ? 1 : 0));
    Check(trie.Remove(parsed.filter, 1) && trie.empty());
  }
  if (filter_ok && !parsed.shared()) {
    auto rw = TopicRewrite::Create(filter, target, "p/", "");
    if (rw.ok() && topic_ok) {
      auto out = rw->Apply(topic);
      if (out) Check(ValidateTopicName(*out) == ReasonCode::kSuccess);
    }
  }
  return 0;
}
