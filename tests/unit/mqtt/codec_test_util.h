// Helpers the codec tests share: decoding through the framer as a stream would, error codes
// from hex bodies, and the encode-decode-encode round trip.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "mqtt/codec.h"
#include "mqtt/framer.h"
#include "tests/support/bytes.h"

namespace qbridge::mqtt {

using qbridge::testing::Hex;

// Decodes exactly one packet from `bytes` through the framer, as a stream would.
inline CodecStatus DecodeOne(const std::vector<uint8_t>& bytes, Version v, Packet* out) {
  Framer framer;
  CodecStatus status = Malformed("no frame");
  int frames = 0;
  const CodecStatus fs = framer.Feed(bytes, [&](const Frame& f) {
    ++frames;
    status = Decode(f.header, f.body, v, out);
    return true;
  });
  if (!fs.ok()) return fs;
  EXPECT_EQ(frames, 1);
  EXPECT_EQ(framer.buffered(), 0u);
  return status;
}

// Decodes a body given as hex under a fixed-header byte; returns the reason code.
inline ReasonCode Err(uint8_t header, const char* body_hex, Version v) {
  const auto body = Hex(body_hex);
  Packet p;
  return Decode(header, body, v, &p).code;
}

inline std::vector<uint8_t> Enc(const Packet& p, Version v) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(EncodeTo(p, v, out)) << PacketTypeName(TypeOf(p));
  return out;
}

// Encode, decode, encode again: both encodings must be identical, and the size
// prediction exact.
inline Packet RoundTrip(const Packet& p, Version v, std::vector<uint8_t>* storage) {
  *storage = Enc(p, v);
  EXPECT_EQ(EncodedSize(p, v), storage->size());
  // Encoding into a roomier buffer must write exactly the predicted bytes too.
  std::vector<uint8_t> roomy(storage->size() + 64, 0xEE);
  EXPECT_EQ(Encode(p, v, roomy), storage->size());
  EXPECT_TRUE(std::equal(storage->begin(), storage->end(), roomy.begin()));
  Packet back;
  const CodecStatus s = DecodeOne(*storage, v, &back);
  EXPECT_TRUE(s.ok()) << s.detail;
  EXPECT_EQ(Enc(back, v), *storage);
  return back;
}

inline constexpr Version kAllVersions[] = {Version::k31, Version::k311, Version::k5};

}  // namespace qbridge::mqtt
