// QUIC benchmarks: one connection's goodput over the in-process link and over loopback
// UDP sockets (with and without GSO/GRO), and handshakes per second. The figures and the
// command are in docs/benchmarks.md; compare ratios from one run.
#include <benchmark/benchmark.h>

#include <map>

#include "tests/support/quic_sim.h"
#include "tests/support/quic_udp_pair.h"
#include "tests/support/test_certs.h"

namespace qbridge::quic {
namespace {

using qbridge::testing::GetTestCerts;

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

struct Tls {
  std::unique_ptr<TlsContext> server, client;
  Tls() {
    const auto& certs = GetTestCerts();
    TlsConfig st;
    st.certfile = certs.server_cert;
    st.keyfile = certs.server_key;
    st.verify_peer = false;
    TlsConfig ct;
    ct.cacertfile = certs.ca;
    ct.server_name = "localhost";
    server = std::move(*TlsContext::Create(TlsContext::Side::kServer, st));
    client = std::move(*TlsContext::Create(TlsContext::Side::kClient, ct));
  }
};

const Tls& GetTls() {
  static const Tls tls;
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

// Goodput of one stream through the in-process link (no kernel; the CPU cost of ngtcp2,
// GnuTLS and our code only).
void BM_GoodputInProcess(benchmark::State& state) {
  const size_t total = size_t(state.range(0)) << 20;
  qbridge::testing::LinkConfig link;
  link.delay_ns = 100'000;           // 100 us one way
  link.bandwidth_bps = 40'000'000'000;  // a 40 Gbit/s bottleneck with a 1 MiB queue
  link.min_step_ns = 20'000;            // wake every 20 us: bursts, as a poll loop sees them
  auto buf = std::make_shared<const std::vector<uint8_t>>(kChunk, 0x42);
  for (auto _ : state) {
    state.PauseTiming();
    qbridge::testing::QuicSim sim(link);
    EndpointConfig ec;
    ec.retry = RetryMode::kOff;
    ec.transport = BulkTransport();
    auto ep = std::move(*ServerEndpoint::Create(*GetTls().server, ec));
    Sink server_events, client_events;
    ep->set_on_accept([&](Connection&) { return &server_events; });
    auto client = std::move(*Connection::Connect(*GetTls().client, BulkTransport(), sim.ClientPath(),
                                                 &client_events, sim.now()));
    sim.client = client.get();
    sim.server = ep.get();
    sim.RunUntil([&] { return client_events.confirmed; }, 5 * kSecond);
    const int64_t sid = *client->OpenStream();
    for (size_t off = 0; off < total; off += kChunk)
      client->Send(sid, buf, off + kChunk >= total).IgnoreError();  // a fresh stream accepts
    state.ResumeTiming();
    sim.RunUntil([&] { return server_events.fin; }, 600 * kSecond);
    if (server_events.received != total) state.SkipWithError("transfer incomplete");
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(total));
}
BENCHMARK(BM_GoodputInProcess)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same transfer over two loopback UDP sockets, with GSO/GRO (range 1) or without.
void BM_GoodputLoopback(benchmark::State& state) {
  const size_t total = size_t(state.range(0)) << 20;
  dp::UdpOptions opts;
  opts.gso = opts.gro = state.range(1) != 0;
  auto buf = std::make_shared<const std::vector<uint8_t>>(kChunk, 0x42);
  for (auto _ : state) {
    state.PauseTiming();
    qbridge::testing::UdpQuicPair pair;
    if (!pair.Bind(opts).ok()) {
      state.SkipWithError("bind failed");
      break;
    }
    EndpointConfig ec;
    ec.retry = RetryMode::kOff;
    ec.transport = BulkTransport();
    auto ep = std::move(*ServerEndpoint::Create(*GetTls().server, ec));
    Sink server_events, client_events;
    ep->set_on_accept([&](Connection&) { return &server_events; });
    auto client = std::move(*Connection::Connect(*GetTls().client, BulkTransport(),
                                                 pair.ClientPath(), &client_events,
                                                 qbridge::testing::MonotonicNs()));
    pair.client = client.get();
    pair.server = ep.get();
    pair.RunUntil([&] { return client_events.confirmed; }, 5 * kSecond);
    const int64_t sid = *client->OpenStream();
    for (size_t off = 0; off < total; off += kChunk)
      client->Send(sid, buf, off + kChunk >= total).IgnoreError();  // a fresh stream accepts
    state.ResumeTiming();
    pair.RunUntil([&] { return server_events.fin; }, 120 * kSecond);
    if (server_events.received != total) state.SkipWithError("transfer incomplete");
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(total));
}
BENCHMARK(BM_GoodputLoopback)->Args({64, 1})->Args({64, 0})->Unit(benchmark::kMillisecond)->UseRealTime();

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

}  // namespace
}  // namespace qbridge::quic

BENCHMARK_MAIN();
