#include "mqtt/framer.h"

#include <gtest/gtest.h>

#include "mqtt/codec.h"
#include "tests/support/bytes.h"

namespace qbridge::mqtt {
namespace {

using qbridge::testing::Hex;

struct Collected {
  std::vector<std::vector<uint8_t>> packets;
  std::vector<bool> in_place;  // whether the frame viewed the fed fragment
};

CodecStatus FeedAll(Framer& f, Bytes chunk, Collected& c) {
  return f.Feed(chunk, [&](const Frame& fr) {
    c.packets.emplace_back(fr.whole.begin(), fr.whole.end());
    c.in_place.push_back(fr.whole.data() >= chunk.data() &&
                         fr.whole.data() < chunk.data() + chunk.size());
    EXPECT_EQ(fr.body.size() + (fr.body.data() - fr.whole.data()), fr.whole.size());
    return true;
  });
}

std::vector<uint8_t> ThreePackets() {
  std::vector<uint8_t> s = Hex("32 0a 00 03 'a/b' 00 07 'hey'");  // PUBLISH QoS 1
  const auto ping = Hex("c0 00");
  s.insert(s.end(), ping.begin(), ping.end());
  std::vector<uint8_t> big = Hex("30 82 01 00 01 'x'");  // 130-byte body, 2-byte length
  big.resize(3 + 130, 'p');
  s.insert(s.end(), big.begin(), big.end());
  return s;
}

TEST(Framer, WholePacketsInOneFragmentAreNotCopied) {
  const auto stream = ThreePackets();
  Framer f;
  Collected c;
  ASSERT_TRUE(FeedAll(f, stream, c).ok());
  ASSERT_EQ(c.packets.size(), 3u);
  EXPECT_EQ(c.in_place, (std::vector<bool>{true, true, true}));
  EXPECT_EQ(c.packets[1], Hex("c0 00"));
  EXPECT_EQ(c.packets[2].size(), 133u);
  EXPECT_EQ(f.buffered(), 0u);
}

TEST(Framer, EveryFragmentationYieldsTheSamePackets) {
  const auto stream = ThreePackets();
  Framer whole;
  Collected expected;
  ASSERT_TRUE(FeedAll(whole, stream, expected).ok());
  // Every chunk size from 1 byte up: the packets must come out identical and in order.
  for (size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    Framer f;
    Collected c;
    for (size_t off = 0; off < stream.size(); off += chunk) {
      const size_t n = std::min(chunk, stream.size() - off);
      ASSERT_TRUE(FeedAll(f, Bytes(stream).subspan(off, n), c).ok()) << chunk;
    }
    EXPECT_EQ(c.packets, expected.packets) << "chunk " << chunk;
    EXPECT_EQ(f.buffered(), 0u);
  }
}

TEST(Framer, SplitPacketIsGatheredThenRestIsZeroCopy) {
  const auto stream = ThreePackets();
  Framer f;
  Collected c;
  ASSERT_TRUE(FeedAll(f, Bytes(stream).first(5), c).ok());
  EXPECT_TRUE(c.packets.empty());
  EXPECT_EQ(f.buffered(), 5u);
  ASSERT_TRUE(FeedAll(f, Bytes(stream).subspan(5), c).ok());
  ASSERT_EQ(c.packets.size(), 3u);
  EXPECT_EQ(c.in_place, (std::vector<bool>{false, true, true}));
}

TEST(Framer, MalformedRemainingLengthFailsForGood) {
  Framer f;
  Collected c;
  const auto bad = Hex("30 ff ff ff ff 01");
  const CodecStatus s = FeedAll(f, bad, c);
  EXPECT_EQ(s.code, ReasonCode::kMalformedPacket);
  EXPECT_TRUE(f.failed());
  EXPECT_EQ(FeedAll(f, Hex("c0 00"), c).code, ReasonCode::kMalformedPacket);
  EXPECT_TRUE(c.packets.empty());
}

TEST(Framer, MalformedLengthAcrossFragments) {
  Framer f;
  Collected c;
  for (uint8_t b : Hex("30 ff ff ff")) ASSERT_TRUE(FeedAll(f, Bytes(&b, 1), c).ok());
  const uint8_t last = 0xff;
  EXPECT_EQ(FeedAll(f, Bytes(&last, 1), c).code, ReasonCode::kMalformedPacket);
}

TEST(Framer, NonMinimalLengthIsMalformed) {
  Framer f;
  Collected c;
  EXPECT_EQ(FeedAll(f, Hex("c0 80 00"), c).code, ReasonCode::kMalformedPacket);
}

TEST(Framer, OversizedPacketIsRefusedBeforeItsBodyArrives) {
  Framer f(1024);
  Collected c;
  // Announces 1 MiB; only the header has arrived.
  EXPECT_EQ(FeedAll(f, Hex("30 80 80 40"), c).code, ReasonCode::kPacketTooLarge);
  EXPECT_LE(f.buffered(), 4u);
  Framer g(1024);
  // Exactly at the limit passes: 1 + 2 + 1021.
  std::vector<uint8_t> ok = Hex("30 fd 07 00 01 'x'");
  ok.resize(1024, 'y');
  EXPECT_TRUE(FeedAll(g, ok, c).ok());
  EXPECT_EQ(c.packets.size(), 1u);
  Framer h(1023);
  EXPECT_EQ(FeedAll(h, ok, c).code, ReasonCode::kPacketTooLarge);
}

TEST(Framer, OversizeDetectedWhenHeaderSpansFragments) {
  Framer f(100);
  Collected c;
  ASSERT_TRUE(FeedAll(f, Hex("30"), c).ok());
  ASSERT_TRUE(FeedAll(f, Hex("80"), c).ok());
  EXPECT_EQ(FeedAll(f, Hex("01"), c).code, ReasonCode::kPacketTooLarge);
}

TEST(Framer, CallbackCanStop) {
  const auto stream = ThreePackets();
  Framer f;
  int seen = 0;
  EXPECT_TRUE(f.Feed(stream, [&](const Frame&) { return ++seen < 2; }).ok());
  EXPECT_EQ(seen, 2);
  EXPECT_EQ(f.buffered(), 0u);  // the rest was dropped, nothing half-held
  EXPECT_FALSE(f.failed());
  // Stopping inside a gathered packet also leaves nothing behind.
  Framer g;
  seen = 0;
  ASSERT_TRUE(g.Feed(Bytes(stream).first(3), [&](const Frame&) { return true; }).ok());
  EXPECT_TRUE(g.Feed(Bytes(stream).subspan(3), [&](const Frame&) { return ++seen < 1; }).ok());
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(g.buffered(), 0u);
}

TEST(Framer, SplitLargePacketDoesNotKeepItsBuffer) {
  std::vector<uint8_t> big = Hex("30 80 80 04 00 01 'x'");  // 65,536-byte body
  big.resize(4 + 65536, 'z');
  Framer f;
  int seen = 0;
  auto count = [&](const Frame& fr) {
    EXPECT_EQ(fr.whole.size(), big.size());
    ++seen;
    return true;
  };
  ASSERT_TRUE(f.Feed(Bytes(big).first(100), count).ok());
  ASSERT_TRUE(f.Feed(Bytes(big).subspan(100), count).ok());
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(f.buffered(), 0u);
  EXPECT_LE(f.buffer_capacity(), 64u * 1024);
}

TEST(Framer, DecodesWhatItFrames) {
  const auto stream = ThreePackets();
  Framer f;
  std::vector<PacketType> types;
  ASSERT_TRUE(f.Feed(stream, [&](const Frame& fr) {
                 Packet p;
                 EXPECT_TRUE(Decode(fr.header, fr.body, Version::k311, &p).ok());
                 types.push_back(TypeOf(p));
                 return true;
               }).ok());
  EXPECT_EQ(types, (std::vector<PacketType>{PacketType::kPublish, PacketType::kPingreq,
                                            PacketType::kPublish}));
}

}  // namespace
}  // namespace qbridge::mqtt
