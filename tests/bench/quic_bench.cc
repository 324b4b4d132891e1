// QUIC benchmarks: one connection's goodput over the in-process link and over loopback
// UDP sockets (with and without GSO/GRO), and handshakes per second. The figures and the
// command are in docs/benchmarks.md; compare ratios from one run.
#include <benchmark/benchmark.h>

#include <map>

#include "dataplane/dpdk/eal.h"
#include "tests/support/dpdk_ring_pair.h"
#include "tests/support/quic_sim.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/quic_udp_pair.h"
#include "tests/support/test_certs.h"

namespace qbridge::quic {
namespace {


class Sink : public ConnectionEvents {
 public:
  bool confirmed = false;
  uint64_t received = 0;
  bool fin = false;
  void OnHandshakeConfirmed() override { confirmed = true; }
  void OnStreamData(int64_t, std::span<const uint8_t> d, bool f) override {
    received += d.size();
    fin |= f;
  }
};

const qbridge::testing::TestTls& GetTls() {
  static const qbridge::testing::TestTls tls;
  return tls;
}

constexpr size_t kChunk = 1 << 20;

TransportConfig BulkTransport() {
  TransportConfig t;
  t.stream_window = 8 << 20;
  t.connection_window = 16 << 20;
  t.max_stream_window = 32 << 20;
  t.max_connection_window = 64 << 20;
  return t;
}

// A handshaken connection over `net` (the in-process link or two sockets) with `total`
// bytes queued on one stream, so the timed part is the transfer alone.
struct Bulk {
  std::unique_ptr<ServerEndpoint> endpoint;
  std::unique_ptr<Connection> client;
  Sink server_events, client_events;
};

template <typename Net>
std::unique_ptr<Bulk> StartBulk(Net& net, const Path& client_path, Timestamp now, size_t total) {
  static const Buffer chunk = Buffer::Copy(std::vector<uint8_t>(kChunk, 0x42));
  auto b = std::make_unique<Bulk>();
  EndpointConfig ec;
  ec.retry = RetryMode::kOff;
  ec.transport = BulkTransport();
  b->endpoint = std::move(*ServerEndpoint::Create(*GetTls().server, ec));
  b->endpoint->set_on_accept([p = b.get()](Connection&) { return &p->server_events; });
  b->client = std::move(*Connection::Connect(*GetTls().client, BulkTransport(), client_path,
                                             &b->client_events, now));
  net.client = b->client.get();
  net.server = b->endpoint.get();
  net.RunUntil([&] { return b->client_events.confirmed; }, 5 * kSecond);
  const int64_t sid = *b->client->OpenStream();
  for (size_t off = 0; off < total; off += kChunk)
    b->client->Send(sid, chunk, off + kChunk >= total).IgnoreError();  // a fresh stream accepts
  return b;
}

// Times one bulk transfer per iteration over a network made by make_net(): a function
// returning the network (QuicSim, UdpQuicPair, DpdkRingPair) or nullptr when it could not
// be built. Set-up and the handshake are outside the timed part.
struct NoCount {
  template <typename Net>
  uint64_t operator()(const Net&) const { return 0; }
};

template <typename MakeNet, typename Datagrams = NoCount>
void GoodputOver(benchmark::State& state, MakeNet&& make_net, Datagrams&& datagrams = {}) {
  const size_t total = size_t(state.range(0)) << 20;
  uint64_t packets = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto net = make_net();
    if (!net) {
      state.SkipWithError("network set-up failed");
      break;
    }
    auto bulk = StartBulk(*net, net->ClientPath(), net->now(), total);
    state.ResumeTiming();
    const uint64_t before = datagrams(*net);
    net->RunUntil([&] { return bulk->server_events.fin; }, 600 * kSecond);
    packets += datagrams(*net) - before;
    if (bulk->server_events.received != total) state.SkipWithError("transfer incomplete");
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(total));
  // QUIC datagrams received by both ends: packets processed per second on this one core.
  if (packets) state.counters["datagrams_per_s"] = benchmark::Counter(double(packets), benchmark::Counter::kIsRate);
}

// Goodput of one stream through the in-process link (no kernel; the CPU cost of ngtcp2,
// GnuTLS and our code only).
void BM_GoodputInProcess(benchmark::State& state) {
  qbridge::testing::LinkConfig link;
  link.delay_ns = 100'000;              // 100 us one way
  link.bandwidth_bps = 40'000'000'000;  // a 40 Gbit/s bottleneck with a 1 MiB queue
  link.min_step_ns = 20'000;            // wake every 20 us: bursts, as a poll loop sees them
  GoodputOver(state, [&] { return std::make_unique<qbridge::testing::QuicSim>(link); });
}
BENCHMARK(BM_GoodputInProcess)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same transfer over two loopback UDP sockets, with GSO/GRO (range 1) or without.
void BM_GoodputLoopback(benchmark::State& state) {
  dp::UdpOptions opts;
  opts.gso = opts.gro = state.range(1) != 0;
  GoodputOver(state, [&] {
    auto pair = std::make_unique<qbridge::testing::UdpQuicPair>();
    return pair->Bind(opts).ok() ? std::move(pair) : nullptr;
  });
}
BENCHMARK(BM_GoodputLoopback)->Args({64, 1})->Args({64, 0})->Unit(benchmark::kMillisecond)->UseRealTime();

// The same transfer over two DPDK ring-PMD ports with our Ethernet/ARP/IPv4/UDP stack:
// the DPDK backend against the kernel one, same QUIC workload, same run.
void BM_GoodputDpdkRing(benchmark::State& state) {
  GoodputOver(state, [&] {
    auto pair = std::make_unique<qbridge::testing::DpdkRingPair>();
    return pair->Create().ok() ? std::move(pair) : nullptr;
  }, [](qbridge::testing::DpdkRingPair& p) { return p.a->stats().rx_udp.Get() + p.b->stats().rx_udp.Get(); });
}
BENCHMARK(BM_GoodputDpdkRing)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

// Full handshakes (ECDSA P-256, X25519, certificate verified) over the in-process link,
// client and server on this one core.
void BM_Handshake(benchmark::State& state) {
  qbridge::testing::LinkConfig link;
  link.delay_ns = 0;
  EndpointConfig ec;
  ec.retry = RetryMode::kOff;
  auto ep = std::move(*ServerEndpoint::Create(*GetTls().server, ec));
  Sink server_events;
  ep->set_on_accept([&](Connection&) { return &server_events; });
  for (auto _ : state) {
    qbridge::testing::QuicSim sim(link);
    Sink client_events;
    auto client = std::move(*Connection::Connect(*GetTls().client, TransportConfig{},
                                                 sim.ClientPath(), &client_events, sim.now()));
    sim.client = client.get();
    sim.server = ep.get();
    if (!sim.RunUntil([&] { return client_events.confirmed; }, 5 * kSecond))
      state.SkipWithError("handshake failed");
    client->Close(0);
    sim.RunUntil([] { return false; }, 1);
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
}
BENCHMARK(BM_Handshake)->Unit(benchmark::kMicrosecond);

// What one poll-loop iteration costs a server endpoint holding `n` connections with nothing
// to do (their first flight answered, replies gone): WriteAll plus Expiry, as a worker calls
// them every iteration. Idle connections are not written, and deadlines come from a table.
void BM_EndpointIdleIteration(benchmark::State& state) {
  EndpointConfig ec;
  ec.retry = RetryMode::kOff;
  ec.max_connections = 1 << 20;
  ec.max_handshakes = 1 << 20;
  auto ep = std::move(*ServerEndpoint::Create(*GetTls().server, ec));
  const Timestamp now = kSecond;
  qbridge::testing::FireInitials(*ep, *GetTls().client, TransportConfig{}, int(state.range(0)), "198.18.0.1",
                                 20000, now);
  std::vector<uint8_t> scratch(64 * 1500);
  auto drop = [](const Path&, std::span<const uint8_t>, size_t) {};
  ep->WriteAll(now, scratch, 64, drop);  // their answers go out once
  if (ep->connections() != size_t(state.range(0))) {
    state.SkipWithError("not every Initial made a connection");
    return;
  }
  for (auto _ : state) {
    ep->WriteAll(now, scratch, 64, drop);
    benchmark::DoNotOptimize(ep->Expiry());
  }
  state.counters["ns_per_connection"] = benchmark::Counter(
      double(state.range(0)), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_EndpointIdleIteration)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace qbridge::quic

int main(int argc, char** argv) {
  // EAL once per process for the DPDK benchmark (no hugepages, no PCI).
  if (auto s = qbridge::dp::InitEal(qbridge::dp::DevEalArgs("qbridge_bench", 512)); !s.ok()) {
    fprintf(stderr, "EAL: %s\n", s.ToString().c_str());
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
