// Incremental MQTT framer for one byte stream (a QUIC stream or a TCP connection).
//
// Bytes arrive in arbitrary fragments. A packet that lies whole inside the fragment being
// fed is handed out as a view into that fragment (no copy); only a packet split across
// fragments is gathered in the framer's own buffer, which is reused, so steady state
// allocates nothing. The size limit is checked as soon as the fixed header is complete,
// before anything of an oversized packet is buffered, and the buffer grows only as bytes
// arrive (a peer that announces a large packet and stalls holds no more than it sent).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "mqtt/properties.h"
#include "mqtt/types.h"
#include "mqtt/wire.h"

namespace qbridge::mqtt {

struct Frame {
  uint8_t header = 0;  // fixed header byte 1: type << 4 | flags
  Bytes body;          // after the remaining length
  Bytes whole;         // the entire packet, for forwarding it unchanged

  PacketType type() const { return static_cast<PacketType>(header >> 4); }
};

class Framer {
 public:
  explicit Framer(uint32_t max_packet_size = 1 + 4 + kMaxVarInt)
      : max_packet_size_(max_packet_size) {}

  // The limit applies to whole packets (fixed header included), as MQTT 5's Maximum
  // Packet Size does. It may change between Feed calls (after CONNECT/CONNACK).
  void set_max_packet_size(uint32_t n) { max_packet_size_ = n; }
  uint32_t max_packet_size() const { return max_packet_size_; }

  // Feeds a fragment. fn(const Frame&) -> bool is called for each whole packet, in order;
  // the frame's views are valid only during the call. Returning false stops: the rest of
  // the fragment is dropped and Feed returns success (the caller is closing the stream).
  // On a framing error (malformed remaining length, packet over the limit) Feed returns
  // the reason code and the framer stays failed: a byte stream cannot be resynchronised.
  template <typename Fn>
  CodecStatus Feed(Bytes data, Fn&& fn);

  // Bytes of a partial packet held between fragments, and the memory held for them.
  size_t buffered() const { return buf_.size(); }
  size_t buffer_capacity() const { return buf_.capacity(); }
  bool failed() const { return !error_.ok(); }

 private:
  // Parses a fixed header at the start of `in`: kOk with the total packet size, kNeedMore,
  // or an error (set in error_).
  enum class HeaderState : uint8_t { kOk, kNeedMore, kError };
  HeaderState ParseHeader(Bytes in, size_t* total, size_t* header_len);

  static constexpr size_t kKeepBufferBytes = 64 * 1024;

  uint32_t max_packet_size_;
  std::vector<uint8_t> buf_;
  size_t need_ = 0;  // total size of the packet being gathered in buf_, 0 if unknown yet
  size_t header_len_ = 0;
  CodecStatus error_;
};

inline Framer::HeaderState Framer::ParseHeader(Bytes in, size_t* total, size_t* header_len) {
  if (in.size() < 2) return HeaderState::kNeedMore;
  const VarIntResult len = DecodeVarInt(in.subspan(1));
  if (len.status == VarIntStatus::kNeedMore) return HeaderState::kNeedMore;
  if (len.status == VarIntStatus::kMalformed) {
    error_ = Malformed("malformed remaining length");
    return HeaderState::kError;
  }
  *header_len = 1 + len.length;
  *total = *header_len + len.value;
  if (*total > max_packet_size_) {
    error_ = {ReasonCode::kPacketTooLarge, "packet exceeds the maximum packet size"};
    return HeaderState::kError;
  }
  return HeaderState::kOk;
}

template <typename Fn>
CodecStatus Framer::Feed(Bytes data, Fn&& fn) {
  if (!error_.ok()) return error_;
  // First finish a packet that an earlier fragment began.
  while (!buf_.empty() && !data.empty()) {
    if (need_ == 0) {
      // At most 5 header bytes are needed to learn the size; take them one at a time.
      buf_.push_back(data[0]);
      data = data.subspan(1);
      size_t total = 0, hlen = 0;
      switch (ParseHeader(buf_, &total, &hlen)) {
        case HeaderState::kNeedMore: continue;
        case HeaderState::kError: return error_;
        case HeaderState::kOk:
          need_ = total;
          header_len_ = hlen;
          break;
      }
    }
    const size_t take = std::min(need_ - buf_.size(), data.size());
    buf_.insert(buf_.end(), data.begin(), data.begin() + take);
    data = data.subspan(take);
    if (buf_.size() < need_) return {};
    const Bytes whole(buf_);
    const Frame f{whole[0], whole.subspan(header_len_), whole};
    const bool go_on = fn(f);
    buf_.clear();
    // Thousands of streams may each have gathered one large packet once: keep a small
    // buffer per stream, not its high-water mark.
    if (buf_.capacity() > kKeepBufferBytes) buf_.shrink_to_fit();
    need_ = 0;
    if (!go_on) return {};
  }
  // Whole packets straight from the fragment.
  while (!data.empty()) {
    size_t total = 0, hlen = 0;
    const HeaderState hs = ParseHeader(data, &total, &hlen);
    if (hs == HeaderState::kError) return error_;
    if (hs == HeaderState::kNeedMore || total > data.size()) {
      buf_.assign(data.begin(), data.end());
      if (hs == HeaderState::kOk) {
        need_ = total;
        header_len_ = hlen;
      }
      return {};
    }
    const Frame f{data[0], data.subspan(hlen, total - hlen), data.first(total)};
    if (!fn(f)) return {};
    data = data.subspan(total);
  }
  return {};
}

}  // namespace qbridge::mqtt
