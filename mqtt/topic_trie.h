// A subscription trie: topic filters in, every (key, value) whose filter matches a topic
// out. One node per filter level; '+' and '#' are separate edges, so a match walks at most
// two branches per level and never compares against filters that cannot match.
//
// Keys identify subscribers (a session, a stream, a bridge rule); one key holds at most
// one entry per filter, and inserting again replaces its value (MQTT's re-subscribe).
// Filters are plain: strip "$share/group/" with ParseFilter before inserting.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "mqtt/topic.h"

namespace qbridge::mqtt {

template <typename Key, typename Value>
class TopicTrie {
 public:
  struct Entry {
    Key key;
    Value value;
  };

  enum class InsertResult : uint8_t { kAdded, kReplaced, kTooDeep };

  // Adds or replaces key's entry under `filter` (a plain filter that passed
  // ValidateTopicFilter). A filter deeper than kMaxTopicLevels is refused even so: the
  // trie's recursion depth must not be the peer's to choose.
  InsertResult Insert(std::string_view filter, const Key& key, Value value) {
    size_t depth = 1;
    for (char c : filter) depth += c == '/';
    if (depth > kMaxTopicLevels) return InsertResult::kTooDeep;
    Node* node = &root_;
    bool hash = false;
    TopicLevels levels(filter);
    while (!levels.done()) {
      const std::string_view level = levels.Next();
      if (level == "#") {
        hash = true;
        break;
      }
      std::unique_ptr<Node>& next =
          level == "+" ? node->plus : node->children[absl::string_view(level.data(), level.size())];
      if (!next) next = std::make_unique<Node>();
      node = next.get();
    }
    std::vector<Entry>& entries = hash ? node->hash : node->exact;
    for (Entry& e : entries) {
      if (e.key == key) {
        e.value = std::move(value);
        return InsertResult::kReplaced;
      }
    }
    entries.push_back(Entry{key, std::move(value)});
    ++size_;
    return InsertResult::kAdded;
  }

  // Removes key's entry under `filter`; false when there was none. Prunes empty nodes.
  bool Remove(std::string_view filter, const Key& key) {
    TopicLevels levels(filter);
    const bool removed = RemoveFrom(&root_, levels, key);
    if (removed) --size_;
    return removed;
  }

  // Calls fn(const Entry&) for every entry whose filter matches `topic`. An entry appears
  // once per matching filter, so a key subscribed with two overlapping filters appears
  // twice (the caller applies MQTT's overlapping-subscription rule).
  template <typename Fn>
  void Match(std::string_view topic, Fn&& fn) const {
    const bool dollar = !topic.empty() && topic[0] == '$';
    MatchFrom(root_, TopicLevels(topic), /*root=*/true, dollar, fn);
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  struct Node {
    absl::flat_hash_map<std::string, std::unique_ptr<Node>> children;  // literal levels
    std::unique_ptr<Node> plus;
    std::vector<Entry> exact;  // filters ending at this node
    std::vector<Entry> hash;   // filters ending in '#' below this node
    bool Empty() const { return children.empty() && !plus && exact.empty() && hash.empty(); }
  };

  template <typename Fn>
  static void MatchFrom(const Node& node, TopicLevels levels, bool root, bool dollar, Fn& fn) {
    // Wildcards at the first level never match '$' topics (spec 4.7.2).
    const bool wild_ok = !(root && dollar);
    if (wild_ok) {
      for (const Entry& e : node.hash) fn(e);
    }
    if (levels.done()) {
      for (const Entry& e : node.exact) fn(e);
      return;
    }
    const std::string_view level = levels.Next();
    if (!node.children.empty()) {
      auto it = node.children.find(absl::string_view(level.data(), level.size()));
      if (it != node.children.end()) MatchFrom(*it->second, levels, false, dollar, fn);
    }
    if (node.plus && wild_ok) MatchFrom(*node.plus, levels, false, dollar, fn);
  }

  static bool EraseKey(std::vector<Entry>& entries, const Key& key) {
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].key == key) {
        entries[i] = std::move(entries.back());
        entries.pop_back();
        return true;
      }
    }
    return false;
  }

  static bool RemoveFrom(Node* node, TopicLevels& levels, const Key& key) {
    if (levels.done()) return EraseKey(node->exact, key);
    const std::string_view level = levels.Next();
    if (level == "#") return EraseKey(node->hash, key);
    std::unique_ptr<Node>* child;
    typename decltype(node->children)::iterator it;
    if (level == "+") {
      child = &node->plus;
    } else {
      it = node->children.find(absl::string_view(level.data(), level.size()));
      if (it == node->children.end()) return false;
      child = &it->second;
    }
    if (!*child) return false;
    const bool removed = RemoveFrom(child->get(), levels, key);
    if (removed && (*child)->Empty()) {
      if (level == "+") {
        node->plus.reset();
      } else {
        node->children.erase(it);
      }
    }
    return removed;
  }

  Node root_;
  size_t size_ = 0;
};

}  // namespace qbridge::mqtt
