#include "mqtt/wire.h"

namespace qbridge::mqtt {

VarIntResult DecodeVarIntSlow(Bytes in) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    if (i >= in.size()) return {VarIntStatus::kNeedMore, 0, 0};
    const uint8_t b = in[i];
    value |= uint32_t(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) {
      // A last byte of 0 after a continuation byte means a shorter encoding existed.
      if (i > 0 && b == 0) return {VarIntStatus::kMalformed, 0, 0};
      return {VarIntStatus::kOk, value, uint8_t(i + 1)};
    }
  }
  return {VarIntStatus::kMalformed, 0, 0};  // a fifth byte would be needed
}

bool IsValidMqttUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    // Topics are nearly always ASCII: take 8 bytes at a time while they are ASCII and
    // none is zero (the classic has-zero-byte test).
    while (end - p >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      constexpr uint64_t kLow = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
      if ((w & kHigh) || ((w - kLow) & ~w & kHigh)) break;
      p += 8;
    }
    if (p == end) break;
    const uint8_t c = *p;
    if (c < 0x80) {
      if (c == 0) return false;
      ++p;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;  // continuation byte as lead, or 0xF8..0xFF
    }
    if (size_t(end - p) <= n) return false;
    for (size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (p[i] & 0x3F);
    }
    static constexpr uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n]) return false;                    // overlong
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;    // surrogate
    if (cp > 0x10FFFF) return false;
    p += n + 1;
  }
  return true;
}

}  // namespace qbridge::mqtt
