// Wire primitives: a bounds-checked reader over received bytes, a writer into a caller
// buffer, MQTT's Variable Byte Integer and UTF-8 string rules. Nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace qbridge::mqtt {

using Bytes = std::span<const uint8_t>;

inline constexpr uint32_t kMaxVarInt = 268'435'455;  // 4 bytes of 7 bits

// Number of bytes the Variable Byte Integer encoding of v takes (1..4). v <= kMaxVarInt.
constexpr size_t VarIntSize(uint32_t v) {
  return v < 128u ? 1 : v < 16'384u ? 2 : v < 2'097'152u ? 3 : 4;
}

// Result of decoding a Variable Byte Integer from a prefix of the input.
enum class VarIntStatus : uint8_t { kOk, kNeedMore, kMalformed };
struct VarIntResult {
  VarIntStatus status;
  uint32_t value;
  uint8_t length;  // bytes consumed when kOk
};
// Rejects a fifth continuation byte and non-minimal encodings (spec 1.5.5). One byte (values
// below 128: most lengths) is decoded inline.
VarIntResult DecodeVarIntSlow(Bytes in);
inline VarIntResult DecodeVarInt(Bytes in) {
  if (!in.empty() && in[0] < 0x80) return {VarIntStatus::kOk, in[0], 1};
  return DecodeVarIntSlow(in);
}

// Spec 1.5.4: well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF) and no U+0000.
bool IsValidMqttUtf8(std::string_view s);

inline std::string_view AsStringView(Bytes b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
inline Bytes AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A cursor over received bytes. Every read checks bounds; a failed read sets ok() false
// and returns a zero value, so a decoder can read a whole header and check once.
class Reader {
 public:
  explicit Reader(Bytes in) : in_(in) {}

  bool ok() const { return ok_; }
  size_t remaining() const { return in_.size() - pos_; }
  bool empty() const { return pos_ == in_.size(); }
  size_t pos() const { return pos_; }

  uint8_t U8() {
    if (!Need(1)) return 0;
    return in_[pos_++];
  }
  uint16_t U16() {
    if (!Need(2)) return 0;
    uint16_t v = uint16_t(in_[pos_] << 8 | in_[pos_ + 1]);
    pos_ += 2;
    return v;
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    uint32_t v = uint32_t(in_[pos_]) << 24 | uint32_t(in_[pos_ + 1]) << 16 |
                 uint32_t(in_[pos_ + 2]) << 8 | uint32_t(in_[pos_ + 3]);
    pos_ += 4;
    return v;
  }
  // Variable Byte Integer; false on malformed or truncated input.
  uint32_t VarInt() {
    if (!ok_) return 0;
    const VarIntResult r = DecodeVarInt(in_.subspan(pos_));
    if (r.status != VarIntStatus::kOk) {
      ok_ = false;
      return 0;
    }
    pos_ += r.length;
    return r.value;
  }
  Bytes Take(size_t n) {
    if (!Need(n)) return {};
    Bytes b = in_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  // Two-byte length prefixed binary data.
  Bytes Binary() { return Take(U16()); }
  // Two-byte length prefixed string; the caller validates UTF-8 (kept separate so that a
  // string failing validation reports Malformed, not a short read).
  std::string_view String() { return AsStringView(Binary()); }
  Bytes Rest() { return Take(remaining()); }

 private:
  bool Need(size_t n) {
    if (ok_ && in_.size() - pos_ >= n) return true;
    ok_ = false;
    return false;
  }

  Bytes in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Writes into a caller-sized buffer. The encoder computes the exact size first, so an
// overflow is a bug; it is caught (ok() false) rather than written past the end.
class Writer {
 public:
  explicit Writer(std::span<uint8_t> out) : out_(out) {}

  bool ok() const { return ok_; }
  size_t size() const { return pos_; }

  void U8(uint8_t v) {
    if (Need(1)) out_[pos_++] = v;
  }
  void U16(uint16_t v) {
    if (!Need(2)) return;
    out_[pos_++] = uint8_t(v >> 8);
    out_[pos_++] = uint8_t(v);
  }
  void U32(uint32_t v) {
    if (!Need(4)) return;
    for (int shift = 24; shift >= 0; shift -= 8) out_[pos_++] = uint8_t(v >> shift);
  }
  void VarInt(uint32_t v) {
    if (v > kMaxVarInt) ok_ = false;  // would need a fifth byte
    do {
      uint8_t b = v & 0x7F;
      v >>= 7;
      if (v) b |= 0x80;
      U8(b);
    } while (v && ok_);
  }
  void Raw(Bytes b) {
    if (!Need(b.size())) return;
    if (!b.empty()) std::memcpy(out_.data() + pos_, b.data(), b.size());
    pos_ += b.size();
  }
  void Binary(Bytes b) {
    if (b.size() > 0xFFFF) ok_ = false;  // not expressible with a two-byte length
    U16(uint16_t(b.size()));
    Raw(b);
  }
  void String(std::string_view s) { Binary(AsBytes(s)); }

 private:
  bool Need(size_t n) {
    if (ok_ && out_.size() - pos_ >= n) return true;
    ok_ = false;
    return false;
  }

  std::span<uint8_t> out_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace qbridge::mqtt
