#include "mqtt/topic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <string>

#include "mqtt/rewrite.h"
#include "mqtt/topic_trie.h"

namespace qbridge::mqtt {
namespace {

TEST(TopicName, Validation) {
  EXPECT_EQ(ValidateTopicName("a/b"), ReasonCode::kSuccess);
  EXPECT_EQ(ValidateTopicName("/"), ReasonCode::kSuccess);
  EXPECT_EQ(ValidateTopicName("$SYS/x"), ReasonCode::kSuccess);
  EXPECT_EQ(ValidateTopicName(""), ReasonCode::kTopicNameInvalid);
  EXPECT_EQ(ValidateTopicName("a/+"), ReasonCode::kTopicNameInvalid);
  EXPECT_EQ(ValidateTopicName("a#"), ReasonCode::kTopicNameInvalid);
  EXPECT_EQ(ValidateTopicName(std::string_view("a\0", 2)), ReasonCode::kTopicNameInvalid);
}

TEST(TopicFilter, Validation) {
  for (const char* ok : {"#", "+", "a/#", "+/+", "/+", "a//b", "a/+/c", "+/#", "$SYS/#",
                         "$share/g/a/+", "$share/group-1/#", "$shar/x"}) {
    EXPECT_EQ(ValidateTopicFilter(ok), ReasonCode::kSuccess) << ok;
  }
  for (const char* bad : {"", "a/#/b", "a#", "#a", "a+", "a/b+", "+a/b", "##", "$share/",
                          "$share/g", "$share//a", "$share/g+/a", "$share/g/", "$share/#/a"}) {
    EXPECT_EQ(ValidateTopicFilter(bad), ReasonCode::kTopicFilterInvalid) << bad;
  }
}

TEST(TopicFilter, ParsesSharedSubscriptions) {
  ParsedFilter p;
  ASSERT_EQ(ParseFilter("$share/g1/a/+/c", &p), ReasonCode::kSuccess);
  EXPECT_TRUE(p.shared());
  EXPECT_EQ(p.share_group, "g1");
  EXPECT_EQ(p.filter, "a/+/c");
  ASSERT_EQ(ParseFilter("a/b", &p), ReasonCode::kSuccess);
  EXPECT_FALSE(p.shared());
  EXPECT_EQ(p.filter, "a/b");
}

TEST(TopicMatch, SpecExamples) {
  // Spec 4.7.1.2 / 4.7.1.3 / 4.7.2.
  EXPECT_TRUE(TopicMatches("sport/tennis/player1/#", "sport/tennis/player1"));
  EXPECT_TRUE(TopicMatches("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
  EXPECT_TRUE(TopicMatches("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
  EXPECT_TRUE(TopicMatches("sport/#", "sport"));
  EXPECT_TRUE(TopicMatches("sport/tennis/+", "sport/tennis/player1"));
  EXPECT_FALSE(TopicMatches("sport/tennis/+", "sport/tennis/player1/ranking"));
  EXPECT_FALSE(TopicMatches("sport/+", "sport"));
  EXPECT_TRUE(TopicMatches("sport/+", "sport/"));
  EXPECT_TRUE(TopicMatches("+/+", "/finance"));
  EXPECT_TRUE(TopicMatches("/+", "/finance"));
  EXPECT_FALSE(TopicMatches("+", "/finance"));
  EXPECT_FALSE(TopicMatches("#", "$SYS/uptime"));
  EXPECT_FALSE(TopicMatches("+/monitor/Clients", "$SYS/monitor/Clients"));
  EXPECT_TRUE(TopicMatches("$SYS/#", "$SYS/monitor/Clients"));
  EXPECT_TRUE(TopicMatches("$SYS/monitor/+", "$SYS/monitor/Clients"));
  EXPECT_TRUE(TopicMatches("#", "a"));
  EXPECT_FALSE(TopicMatches("a/b", "a/b/c"));
  EXPECT_FALSE(TopicMatches("a/b/c", "a/b"));
  EXPECT_TRUE(TopicMatches("a//b", "a//b"));
}

TEST(TopicTrie, MatchesLikeTopicMatches) {
  const std::vector<std::string> filters = {
      "#", "+", "a", "a/#", "a/+", "a/b", "a/+/c", "+/b", "+/+", "/+", "a//b", "$SYS/#",
      "$SYS/+/x", "+/#", "a/b/c/#", "b/#"};
  TopicTrie<int, int> trie;
  using R = TopicTrie<int, int>::InsertResult;
  for (size_t i = 0; i < filters.size(); ++i) EXPECT_EQ(trie.Insert(filters[i], int(i), 0), R::kAdded);
  const std::vector<std::string> topics = {"a", "a/b", "a/b/c", "a/x/c", "/x", "a//b", "b",
                                           "$SYS/up", "$SYS/y/x", "x/b", "a/b/c/d/e", "/"};
  for (const std::string& t : topics) {
    std::vector<int> got;
    trie.Match(t, [&](const auto& e) { got.push_back(e.key); });
    std::vector<int> want;
    for (size_t i = 0; i < filters.size(); ++i)
      if (TopicMatches(filters[i], t)) want.push_back(int(i));
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << t;
  }
}

TEST(TopicTrie, ReplaceRemoveAndPrune) {
  TopicTrie<std::string, int> trie;
  using R = TopicTrie<std::string, int>::InsertResult;
  EXPECT_EQ(trie.Insert("a/+", "s1", 1), R::kAdded);
  EXPECT_EQ(trie.Insert("a/+", "s1", 2), R::kReplaced);  // re-subscribe replaces
  EXPECT_EQ(trie.Insert("a/+", "s2", 3), R::kAdded);
  EXPECT_EQ(trie.Insert("a/#", "s1", 4), R::kAdded);
  EXPECT_EQ(trie.size(), 3u);
  std::vector<std::pair<std::string, int>> got;
  trie.Match("a/x", [&](const auto& e) { got.emplace_back(e.key, e.value); });
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::pair<std::string, int>>{{"s1", 2}, {"s1", 4}, {"s2", 3}}));
  EXPECT_TRUE(trie.Remove("a/+", "s1"));
  EXPECT_FALSE(trie.Remove("a/+", "s1"));
  EXPECT_FALSE(trie.Remove("a/b", "s2"));
  EXPECT_TRUE(trie.Remove("a/+", "s2"));
  EXPECT_TRUE(trie.Remove("a/#", "s1"));
  EXPECT_TRUE(trie.empty());
  int n = 0;
  trie.Match("a/x", [&](const auto&) { ++n; });
  EXPECT_EQ(n, 0);
}

TEST(TopicTrie, DepthIsBounded) {
  // A 65,535-byte "+/+/..." filter would be ~32k levels: refused before it reaches the
  // trie, and refused by the trie itself should a caller skip validation.
  std::string deep;
  for (size_t i = 0; i < kMaxTopicLevels; ++i) deep += i ? "/+" : "+";
  EXPECT_EQ(ValidateTopicFilter(deep), ReasonCode::kSuccess);
  TopicTrie<int, int> trie;
  EXPECT_EQ(trie.Insert(deep, 1, 0), (TopicTrie<int, int>::InsertResult::kAdded));
  deep += "/+";
  EXPECT_EQ(ValidateTopicFilter(deep), ReasonCode::kTopicFilterInvalid);
  EXPECT_EQ(trie.Insert(deep, 2, 0), (TopicTrie<int, int>::InsertResult::kTooDeep));
  EXPECT_EQ(trie.size(), 1u);
  std::string topic;
  for (size_t i = 0; i < kMaxTopicLevels; ++i) topic += i ? "/x" : "x";
  int hits = 0;
  trie.Match(topic, [&](const auto&) { ++hits; });
  EXPECT_EQ(hits, 1);
}

TEST(TopicTrie, IndependentOracle) {
  // Expected matches written out by hand (spec 4.7), not derived from TopicMatches.
  TopicTrie<std::string, int> trie;
  for (const char* f : {"sport/tennis/player1/#", "sport/#", "sport/+", "+/+", "/+", "#",
                        "$SYS/#", "+/monitor/Clients"})
    trie.Insert(f, f, 0);
  auto match = [&](std::string_view t) {
    std::vector<std::string> got;
    trie.Match(t, [&](const auto& e) { got.push_back(e.key); });
    std::sort(got.begin(), got.end());
    return got;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(match("sport"), (V{"#", "sport/#"}));
  EXPECT_EQ(match("sport/tennis/player1"), (V{"#", "sport/#", "sport/tennis/player1/#"}));
  EXPECT_EQ(match("sport/x"), (V{"#", "+/+", "sport/#", "sport/+"}));
  EXPECT_EQ(match("/finance"), (V{"#", "+/+", "/+"}));
  EXPECT_EQ(match("$SYS/monitor/Clients"), (V{"$SYS/#"}));
  EXPECT_EQ(match("a/monitor/Clients"), (V{"#", "+/monitor/Clients"}));
}

TEST(TopicTrie, RandomisedAgainstLinearScan) {
  std::mt19937 rng(7);
  const char* levels[] = {"a", "b", "c", "", "$x"};
  auto random_topic = [&] {
    std::string t;
    const int n = 1 + int(rng() % 4);
    for (int i = 0; i < n; ++i) {
      if (i) t += '/';
      t += levels[rng() % 5];
    }
    return t;
  };
  std::vector<std::string> filters;
  TopicTrie<int, int> trie;
  for (int i = 0; i < 300; ++i) {
    std::string f = random_topic();
    // Replace some levels by wildcards.
    std::string out;
    TopicLevels lv(f);
    bool first = true;
    while (!lv.done()) {
      std::string_view l = lv.Next();
      if (!first) out += '/';
      first = false;
      const unsigned r = rng() % 6;
      if (r == 0) out += '+';
      else if (r == 1 && lv.done()) out += '#';
      else out += l;
    }
    if (ValidateTopicFilter(out) != ReasonCode::kSuccess) continue;
    trie.Insert(out, int(filters.size()), 0);
    filters.push_back(out);
  }
  for (int i = 0; i < 300; ++i) {
    const std::string t = random_topic();
    if (ValidateTopicName(t) != ReasonCode::kSuccess) continue;
    std::vector<int> got, want;
    trie.Match(t, [&](const auto& e) { got.push_back(e.key); });
    for (size_t j = 0; j < filters.size(); ++j)
      if (TopicMatches(filters[j], t)) want.push_back(int(j));
    std::sort(got.begin(), got.end());
    ASSERT_EQ(got, want) << t;
  }
}

// --- NanoMQ bridge rewrite -------------------------------------------------------------------

std::string Rewrite(std::string_view source, std::string_view target, std::string_view topic,
                    std::string_view prefix = {}, std::string_view suffix = {}) {
  auto r = TopicRewrite::Create(source, target, prefix, suffix);
  if (!r.ok()) return "<invalid>";
  return r->Apply(topic).value_or("<none>");
}

constexpr std::string_view kUuid = "785fa9a4-1382-4c58-a11e-c89d94569f6b";

TEST(TopicRewrite, NanomqAnchoringSemantics) {
  const std::string src = std::string(kUuid) + "/zb/+/abv/#";
  const std::string topic = std::string(kUuid) + "/zb/abc/abv/adasdasd/asdasda";
  EXPECT_EQ(Rewrite(src, "+/abv/#", topic), "abc/abv/adasdasd/asdasda");
  EXPECT_EQ(Rewrite(src, "zb/+", topic), "zb/abc");
  EXPECT_EQ(Rewrite(src, "#", topic), "adasdasd/asdasda");
  EXPECT_EQ(Rewrite(src, "#", std::string(kUuid) + "/zb/abc/abv/adasdasd"), "adasdasd");
  EXPECT_EQ(Rewrite(src, "abc", topic), "abc");  // literal target
  EXPECT_EQ(Rewrite(std::string(kUuid) + "/zb/+/abv/+/#", "+", topic), "abc");
  EXPECT_EQ(Rewrite(std::string(kUuid) + "/zb/+/+/abv/#", "+/+",
                    std::string(kUuid) + "/zb/abc/abv/adasdasd"),
            "abc/abv");
  EXPECT_EQ(Rewrite("+/nanomq/#", "#", "cmd/nanomq/hello/world"), "hello/world");
}

TEST(TopicRewrite, InvalidRules) {
  const std::string src = std::string(kUuid) + "/zb/+/abv/#";
  EXPECT_EQ(Rewrite(src, "+/#", "x"), "<invalid>");             // not a substring
  EXPECT_EQ(Rewrite(src + "/+", "abv/#/+", "x"), "<invalid>");  // '#' not last
  EXPECT_EQ(Rewrite("a/#/b", "#", "x"), "<invalid>");           // source not a filter
  EXPECT_EQ(Rewrite("a/#", "#/x", "x"), "<invalid>");
  EXPECT_EQ(Rewrite("a/#", "", "a/b", "p+"), "<invalid>");
}

// ApplyTo reuses the caller's string (the worker's, per message): it replaces what was
// there, and says false where Apply gives nothing.
TEST(TopicRewrite, ApplyToReplacesTheBuffersContents) {
  const auto r = TopicRewrite::Create("+/nanomq/#", "#", "edge/");
  ASSERT_TRUE(r.ok());
  std::string out = "left over from the last message, longer than the next";
  ASSERT_TRUE(r->ApplyTo("cmd/nanomq/hello/world", out));
  EXPECT_EQ(out, "edge/hello/world");
  ASSERT_TRUE(r->ApplyTo("a/nanomq/b", out));
  EXPECT_EQ(out, "edge/b");
  EXPECT_FALSE(r->ApplyTo("nanomq", out));  // fewer levels than the rule strips
  EXPECT_EQ(r->Apply("nanomq"), std::nullopt);
}

TEST(TopicRewrite, KeepLiteralPrefixSuffix) {
  EXPECT_EQ(Rewrite("a/#", "", "a/b/c"), "a/b/c");
  EXPECT_EQ(Rewrite("a/#", "", "a/b", "edge/", "/up"), "edge/a/b/up");
  EXPECT_EQ(Rewrite("a/#", "cloud/in", "a/b", "x/"), "x/cloud/in");
  EXPECT_TRUE(TopicRewrite::Create("a/#", "").value().identity());
  EXPECT_FALSE(TopicRewrite::Create("a/#", "", "p/").value().identity());
}

TEST(TopicRewrite, SharedSubscriptionSourceAnchorsOnItsFilter) {
  // Messages arriving for "$share/g/+/nanomq/#" carry topics like "cmd/nanomq/x".
  EXPECT_EQ(Rewrite("$share/g/+/nanomq/#", "#", "cmd/nanomq/hello/world"), "hello/world");
  EXPECT_EQ(Rewrite("$share/g/a/#", "", "a/b"), "a/b");
}

TEST(TopicRewrite, TopicShorterThanRuleGivesNothing) {
  // '#' also matches the parent level, so "a/b/#" accepts "a/b", but there is nothing
  // left after stripping two levels: no valid topic, no publish.
  EXPECT_EQ(Rewrite("a/b/#", "#", "a/b"), "<none>");
  EXPECT_EQ(Rewrite("+/x/#", "#", "q"), "<none>");
}

}  // namespace
}  // namespace qbridge::mqtt
