// NanoMQ's bridge topic rewrite (nanolib topics.c semantics, reimplemented), so a NanoMQ
// user's `forwards` and `subscription` rules map topics exactly as they did there:
//
//  * target empty            -> the topic is kept as it is;
//  * target without wildcard -> the topic is replaced by the target literal;
//  * target with a wildcard  -> the target must occur in the source filter (as a
//    substring); the levels of the source before that occurrence are stripped from the
//    topic, and the levels the target spans are kept (all remaining levels when the
//    target runs to the end of the source filter).
//    Example: source "+/nanomq/#", target "#": "cmd/nanomq/hello/world" -> "hello/world".
//  * then `prefix` and `suffix` are concatenated as they are (no '/' added).
//
// For a forward rule the source is `local_topic` and the target `remote_topic`; for a
// subscription rule the source is `remote_topic` and the target `local_topic`.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qbridge::mqtt {

class TopicRewrite {
 public:
  // Fails (InvalidArgument, naming the problem) when the source is not a valid filter,
  // the target's '#' is not last, the target has a wildcard but is not a substring of the
  // source, or prefix/suffix hold a wildcard.
  static absl::StatusOr<TopicRewrite> Create(std::string_view source_filter,
                                             std::string_view target, std::string_view prefix = {},
                                             std::string_view suffix = {});

  // Rewrites `topic` (which matched the source filter). nullopt when the topic has fewer
  // levels than the rule strips, or the result would be empty or hold a wildcard.
  std::optional<std::string> Apply(std::string_view topic) const;
  // The same into `out` (its capacity reused: no allocation per message once it has grown);
  // false where Apply gives nullopt. `out` must not hold `topic`.
  bool ApplyTo(std::string_view topic, std::string& out) const;

  // Whether Apply is the identity (no target, prefix or suffix).
  bool identity() const { return mode_ == Mode::kKeep && prefix_.empty() && suffix_.empty(); }

 private:
  enum class Mode { kKeep, kLiteral, kLevels, kRest };
  TopicRewrite() = default;

  Mode mode_ = Mode::kKeep;
  std::string target_;
  std::string prefix_;
  std::string suffix_;
  int skip_levels_ = 0;  // levels stripped from the front
  int keep_levels_ = 0;  // kLevels: levels kept after the stripped ones
};

}  // namespace qbridge::mqtt
