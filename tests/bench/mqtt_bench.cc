// Google Benchmark: the MQTT hot paths. Figures and the command are in docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "mqtt/codec.h"
#include "mqtt/framer.h"
#include "mqtt/topic_trie.h"

namespace qbridge::mqtt {
namespace {

// The PUBLISH every benchmark uses: QoS 1, a 33-byte topic, one property in MQTT 5.
Publish BenchPublish(Bytes payload, Version v) {
  Publish p;
  p.qos = QoS::k1;
  p.packet_id = 4242;
  p.topic = "site/17/line/3/sensor/temperature";
  p.payload = payload;
  if (v == Version::k5) p.properties.message_expiry_interval = 60;
  return p;
}

std::vector<uint8_t> EncodedPublish(size_t payload_size, Version v) {
  const std::vector<uint8_t> payload(payload_size, 0x5A);
  std::vector<uint8_t> out;
  EncodeTo(BenchPublish(payload, v), v, out);
  return out;
}

// Framer + decode of one PUBLISH, as a data stream delivers it.
void BM_DecodePublish(benchmark::State& state) {
  const Version v = static_cast<Version>(state.range(1));
  const auto bytes = EncodedPublish(size_t(state.range(0)), v);
  Framer framer;
  Publish out;
  for (auto _ : state) {
    framer.Feed(bytes, [&](const Frame& f) {
      benchmark::DoNotOptimize(DecodePublish(f.header, f.body, v, &out));
      return true;
    });
    benchmark::DoNotOptimize(out.payload.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes.size()));
}
BENCHMARK(BM_DecodePublish)->Args({64, 4})->Args({1024, 4})->Args({64, 5})->Args({1024, 5});

// Full encode: header and payload copied into one buffer.
void BM_EncodePublish(benchmark::State& state) {
  const Version v = static_cast<Version>(state.range(1));
  std::vector<uint8_t> payload(size_t(state.range(0)), 0x5A);
  const Packet packet = BenchPublish(payload, v);
  std::vector<uint8_t> out(EncodedSize(packet, v));
  for (auto _ : state) {
    benchmark::DoNotOptimize(Encode(packet, v, out));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(out.size()));
}
BENCHMARK(BM_EncodePublish)->Args({64, 4})->Args({1024, 4})->Args({64, 5})->Args({1024, 5});

// Zero-copy encode: only the bytes before the payload (the payload is sent in place).
void BM_EncodePublishHeader(benchmark::State& state) {
  const Version v = static_cast<Version>(state.range(1));
  std::vector<uint8_t> payload(size_t(state.range(0)), 0x5A);
  const Publish p = BenchPublish(payload, v);
  uint8_t hdr[128];
  for (auto _ : state) {
    benchmark::DoNotOptimize(EncodePublishHeader(p, v, hdr));
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_EncodePublishHeader)->Args({64, 4})->Args({1024, 4})->Args({64, 5})->Args({1024, 5});

// Trie match against N filters: a tree of sites/lines/sensors with wildcards mixed in,
// like a broker with one subscription per device plus some fleet-wide ones.
void BM_TrieMatch(benchmark::State& state) {
  const int n = int(state.range(0));
  std::mt19937 rng(1);
  TopicTrie<int, int> trie;
  std::vector<std::string> topics;
  for (int i = 0; i < n; ++i) {
    const int site = int(rng() % 1000), line = int(rng() % 20), sensor = int(rng() % 50);
    std::string f = "site/" + std::to_string(site) + "/line/" + std::to_string(line) + "/sensor/" +
                    std::to_string(sensor);
    const unsigned kind = rng() % 100;
    if (kind < 5) f = "site/" + std::to_string(site) + "/line/+/sensor/" + std::to_string(sensor);
    else if (kind < 7) f = "site/" + std::to_string(site) + "/#";
    trie.Insert(f, i, i);
    topics.push_back("site/" + std::to_string(site) + "/line/" + std::to_string(line) +
                     "/sensor/" + std::to_string(sensor));
  }
  size_t i = 0, hits = 0;
  for (auto _ : state) {
    trie.Match(topics[i++ % topics.size()], [&](const auto&) { ++hits; });
  }
  benchmark::DoNotOptimize(hits);
  state.counters["hits_per_match"] = double(hits) / double(state.iterations());
}
BENCHMARK(BM_TrieMatch)->Arg(1000)->Arg(100000);

}  // namespace
}  // namespace qbridge::mqtt

BENCHMARK_MAIN();
