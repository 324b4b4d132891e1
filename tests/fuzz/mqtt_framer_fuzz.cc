// libFuzzer target: arbitrary bytes as an MQTT byte stream, fed in fragments chosen by the
// input, every frame decoded under every version. Properties checked beyond "no crash":
//  * a packet that decodes re-encodes, and that encoding decodes and re-encodes to the
//    same bytes (decode and encode agree on every field);
//  * the framer never buffers more than the packet-size limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mqtt/codec.h"
#include "mqtt/framer.h"

using namespace qbridge::mqtt;

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void RoundTrip(const Packet& p, Version v) {
  std::vector<uint8_t> first;
  Check(EncodeTo(p, v, first));
  Framer f;
  int frames = 0;
  const CodecStatus s = f.Feed(first, [&](const Frame& fr) {
    ++frames;
    Packet again;
    Check(Decode(fr.header, fr.body, v, &again).ok());
    std::vector<uint8_t> second;
    Check(EncodeTo(again, v, second));
    Check(second == first);
    return true;
  });
  Check(s.ok() && frames == 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // Byte 0: fragment size (1..64, 0 = whole input). Byte 1: packet-size limit class.
  const size_t chunk = data[0] % 65;
  static constexpr uint32_t kLimits[] = {64, 1024, 65536, kMaxPacketSize};
  const uint32_t limit = kLimits[data[1] % 4];
  const Bytes stream(data + 2, size - 2);

  Framer framer(limit);
  auto on_frame = [&](const Frame& fr) {
    Check(fr.whole.size() <= limit);
    for (Version v : {Version::k31, Version::k311, Version::k5}) {
      Packet p;
      if (Decode(fr.header, fr.body, v, &p).ok()) RoundTrip(p, v);
    }
    return true;
  };
  if (chunk == 0) {
    framer.Feed(stream, on_frame);
  } else {
    for (size_t off = 0; off < stream.size() && !framer.failed(); off += chunk) {
      framer.Feed(stream.subspan(off, std::min(chunk, stream.size() - off)), on_frame);
      Check(framer.buffered() <= limit);
    }
  }
  return 0;
}
