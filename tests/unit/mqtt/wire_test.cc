#include "mqtt/wire.h"

#include <gtest/gtest.h>

#include "tests/support/bytes.h"

namespace qbridge::mqtt {
namespace {

using qbridge::testing::Hex;

TEST(VarInt, DecodesSpecBoundaries) {
  struct Case {
    const char* hex;
    uint32_t value;
    uint8_t len;
  } cases[] = {
      {"00", 0, 1},          {"7f", 127, 1},          {"80 01", 128, 2},
      {"ff 7f", 16383, 2},   {"80 80 01", 16384, 3},  {"ff ff 7f", 2097151, 3},
      {"80 80 80 01", 2097152, 4}, {"ff ff ff 7f", kMaxVarInt, 4},
  };
  for (const Case& c : cases) {
    const auto bytes = Hex(c.hex);
    const VarIntResult r = DecodeVarInt(bytes);
    EXPECT_EQ(r.status, VarIntStatus::kOk) << c.hex;
    EXPECT_EQ(r.value, c.value) << c.hex;
    EXPECT_EQ(r.length, c.len) << c.hex;
    EXPECT_EQ(VarIntSize(c.value), c.len);
    std::vector<uint8_t> out(4);
    Writer w(out);
    w.VarInt(c.value);
    ASSERT_TRUE(w.ok());
    out.resize(w.size());
    EXPECT_EQ(out, bytes) << c.hex;
  }
}

TEST(VarInt, RejectsFifthByte) {
  EXPECT_EQ(DecodeVarInt(Hex("ff ff ff ff 7f")).status, VarIntStatus::kMalformed);
  EXPECT_EQ(DecodeVarInt(Hex("80 80 80 80 00")).status, VarIntStatus::kMalformed);
}

TEST(VarInt, RejectsNonMinimalEncoding) {
  EXPECT_EQ(DecodeVarInt(Hex("80 00")).status, VarIntStatus::kMalformed);
  EXPECT_EQ(DecodeVarInt(Hex("ff 80 00")).status, VarIntStatus::kMalformed);
}

TEST(VarInt, NeedsMoreOnTruncation) {
  EXPECT_EQ(DecodeVarInt(Hex("")).status, VarIntStatus::kNeedMore);
  EXPECT_EQ(DecodeVarInt(Hex("80")).status, VarIntStatus::kNeedMore);
  EXPECT_EQ(DecodeVarInt(Hex("ff ff ff")).status, VarIntStatus::kNeedMore);
}

TEST(Utf8, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidMqttUtf8(""));
  EXPECT_TRUE(IsValidMqttUtf8("sensors/temp"));
  EXPECT_TRUE(IsValidMqttUtf8("caf\xc3\xa9"));               // U+00E9
  EXPECT_TRUE(IsValidMqttUtf8("\xe2\x82\xac"));              // U+20AC
  EXPECT_TRUE(IsValidMqttUtf8("\xf0\x9f\x98\x80"));          // U+1F600
  EXPECT_TRUE(IsValidMqttUtf8("\xef\xbb\xbf"));              // BOM: allowed, not skipped
  EXPECT_TRUE(IsValidMqttUtf8("\xf4\x8f\xbf\xbf"));          // U+10FFFF
}

TEST(Utf8, AsciiFastPathStillChecksEveryByte) {
  // The 8-byte ASCII path must still find a NUL or a multi-byte sequence at any offset.
  for (size_t pos = 0; pos < 20; ++pos) {
    std::string s(20, 'a');
    s[pos] = '\0';
    EXPECT_FALSE(IsValidMqttUtf8(s)) << pos;
    s[pos] = '\xc3';
    EXPECT_FALSE(IsValidMqttUtf8(s)) << pos;  // lead byte, then 'a': bad continuation
    if (pos + 1 < s.size()) {
      s[pos + 1] = '\xa9';
      EXPECT_TRUE(IsValidMqttUtf8(s)) << pos;
    }
  }
}

TEST(Utf8, RejectsWhatTheSpecForbids) {
  EXPECT_FALSE(IsValidMqttUtf8(std::string_view("a\0b", 3)));  // U+0000
  EXPECT_FALSE(IsValidMqttUtf8("\xc0\x80"));                  // overlong NUL
  EXPECT_FALSE(IsValidMqttUtf8("\xc1\xbf"));                  // overlong
  EXPECT_FALSE(IsValidMqttUtf8("\xe0\x80\xaf"));              // overlong '/'
  EXPECT_FALSE(IsValidMqttUtf8("\xed\xa0\x80"));              // surrogate U+D800
  EXPECT_FALSE(IsValidMqttUtf8("\xed\xbf\xbf"));              // surrogate U+DFFF
  EXPECT_FALSE(IsValidMqttUtf8("\xf4\x90\x80\x80"));          // above U+10FFFF
  EXPECT_FALSE(IsValidMqttUtf8("\xf8\x88\x80\x80\x80"));      // 5-byte form
  EXPECT_FALSE(IsValidMqttUtf8("\x80"));                      // lone continuation
  EXPECT_FALSE(IsValidMqttUtf8("\xe2\x82"));                  // truncated
  EXPECT_FALSE(IsValidMqttUtf8("\xe2\x28\xa1"));              // bad continuation
}

TEST(Reader, FailsStickyOnShortRead) {
  const auto bytes = Hex("00 05 'ab'");
  Reader r(bytes);
  EXPECT_EQ(r.String(), "");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.U8(), 0);
  EXPECT_FALSE(r.ok());
}

TEST(Writer, RefusesOverflowAndLongStrings) {
  std::vector<uint8_t> out(3);
  Writer w(out);
  w.U16(1);
  w.U16(2);
  EXPECT_FALSE(w.ok());
  std::vector<uint8_t> big(70000);
  Writer w2(big);
  w2.String(std::string(65536, 'x'));
  EXPECT_FALSE(w2.ok());
}

}  // namespace
}  // namespace qbridge::mqtt
