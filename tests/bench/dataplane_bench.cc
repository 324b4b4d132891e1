// Dataplane benchmarks: what one worker core moves through the DPDK backend, against the
// kernel UDP backend with the same work, measured in one run (docs/benchmarks.md).
//  * BM_PortIo: the PMD alone (mbuf alloc, TX burst, RX burst, free): cycles per packet.
//  * BM_UdpEcho*: a UDP echo through our whole stack on one core (RX burst, Ethernet/IPv4/
//    UDP parsing with checksums, the datagram copied out, written back into fresh mbufs,
//    TX burst), on ring-PMD and memif ports and on kernel sockets with and without GSO/GRO.
//    The peer's work (sending, draining) is outside the timed part.
// memif needs EAL's multi-process channel: EAL runs with a shared config under a
// per-process prefix, removed at exit.
#include <benchmark/benchmark.h>
#include <rte_cycles.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "dataplane/dpdk/eal.h"
#include "dataplane/udp_socket.h"
#include "tests/support/dpdk_ring_pair.h"

namespace qbridge::dp {
namespace {

using qbridge::testing::DpdkRingPair;
using qbridge::testing::MonotonicNs;

constexpr size_t kBatch = 512;  // datagrams per timed round (fits a memif ring of 1024)

std::unique_ptr<DpdkRingPair> MakePair(bool memif) {
  auto p = std::make_unique<DpdkRingPair>();
  const absl::Status s = memif ? p->CreateMemif() : p->Create();
  return s.ok() ? std::move(p) : nullptr;
}

void ReportCycles(benchmark::State& state, uint64_t cycles, uint64_t packets) {
  state.SetItemsProcessed(int64_t(packets));
  state.counters["cycles_per_pkt"] = packets ? double(cycles) / double(packets) : 0;
}

// The PMD alone: 32 mbufs of 64 bytes allocated, sent on A, received on B, freed.
void BM_PortIo(benchmark::State& state) {
  auto pair = MakePair(state.range(0) == 1);
  if (!pair) return state.SkipWithError("port pair set-up failed");
  const uint16_t pa = pair->a->port_id(), pb = pair->b->port_id();
  rte_mempool* pool = pair->a->pool();
  uint64_t cycles = 0, packets = 0;
  for (auto _ : state) {
    const uint64_t t0 = rte_rdtsc();
    rte_mbuf* tx[32];
    rte_mbuf* rx[32];
    if (rte_pktmbuf_alloc_bulk(pool, tx, 32) != 0) return state.SkipWithError("mbuf pool empty");
    for (rte_mbuf* m : tx) rte_pktmbuf_append(m, 64);
    const uint16_t sent = rte_eth_tx_burst(pa, 0, tx, 32);
    if (sent < 32) rte_pktmbuf_free_bulk(tx + sent, 32u - sent);
    uint16_t got = 0;
    for (int spin = 0; got < sent && spin < 1000; ++spin) got += rte_eth_rx_burst(pb, 0, rx + got, uint16_t(32 - got));
    rte_pktmbuf_free_bulk(rx, got);
    cycles += rte_rdtsc() - t0;
    packets += got;
  }
  ReportCycles(state, cycles, packets);
}
BENCHMARK(BM_PortIo)->Arg(0)->Arg(1)->ArgName("memif");

// One echo round on `io`: whatever one receive call gives is written back as one send
// (same path reversed, datagrams back to back), as a worker answers a burst.
template <typename Receive, typename Send>
size_t EchoBurst(std::vector<uint8_t>& buf, Receive&& receive, Send&& send) {
  buf.clear();
  quic::Path back;
  size_t seg = 0, n = 0;
  receive([&](const quic::Path& p, std::span<const uint8_t> d) {
    back = quic::Path{p.local, p.remote};
    seg = d.size();
    buf.insert(buf.end(), d.begin(), d.end());
    ++n;
  });
  if (n) send(back, std::span<const uint8_t>(buf), seg);
  return n;
}

// Runs kBatch datagrams of `size` bytes through an echo per iteration: the peer sends them
// (untimed), the echo side answers all of them (timed), the peer drains the answers
// (untimed; every one must come back).
template <typename PeerSend, typename PeerDrain, typename EchoStep>
void EchoRounds(benchmark::State& state, PeerSend&& peer_send, PeerDrain&& peer_drain, EchoStep&& echo) {
  uint64_t cycles = 0, packets = 0;
  for (auto _ : state) {
    state.PauseTiming();
    peer_send();
    state.ResumeTiming();
    const uint64_t t0 = rte_rdtsc();
    const uint64_t end = MonotonicNs() + quic::kSecond;
    size_t done = 0;
    while (done < kBatch && MonotonicNs() < end) done += echo();
    cycles += rte_rdtsc() - t0;
    packets += done;
    state.PauseTiming();
    const size_t back = peer_drain(done);
    state.ResumeTiming();
    if (done != kBatch || back != done) {
      state.SkipWithError("datagrams lost in the echo");
      break;
    }
  }
  ReportCycles(state, cycles, packets);
}

void BM_UdpEchoDpdk(benchmark::State& state) {
  const size_t size = size_t(state.range(0));
  auto pair = MakePair(state.range(1) == 1);
  if (!pair) return state.SkipWithError("port pair set-up failed");
  const quic::Path ab{DpdkRingPair::Addr(DpdkRingPair::kIpA, 40000), DpdkRingPair::Addr(DpdkRingPair::kIpB, 14567)};
  const std::vector<uint8_t> payload(size * 32, 0x5a);
  std::vector<uint8_t> buf;
  // Resolve both ways first, so no datagram waits for ARP in the timed part.
  pair->a->Send(ab, std::span<const uint8_t>(payload).first(size), size);
  for (int i = 0; i < 100 && pair->b->stats().rx_udp.Get() == 0; ++i) {
    pair->b->Receive(MonotonicNs(), [](const quic::Path&, std::span<const uint8_t>) {});
    pair->a->Receive(MonotonicNs(), [](const quic::Path&, std::span<const uint8_t>) {});
  }
  auto peer_send = [&] {
    for (size_t i = 0; i < kBatch / 32; ++i) pair->a->Send(ab, payload, size);
  };
  auto peer_drain = [&](size_t want) {
    size_t got = 0;
    const uint64_t end = MonotonicNs() + quic::kSecond;
    while (got < want && MonotonicNs() < end)
      got += pair->a->Receive(MonotonicNs(), [](const quic::Path&, std::span<const uint8_t>) {});
    return got;
  };
  DpdkIo& b = *pair->b;
  auto echo = [&] {
    const uint64_t now = MonotonicNs();
    return EchoBurst(
        buf, [&](auto&& fn) { b.Receive(now, fn); },
        [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) { b.Send(p, d, seg); });
  };
  EchoRounds(state, peer_send, peer_drain, echo);
}
BENCHMARK(BM_UdpEchoDpdk)->ArgsProduct({{64, 1200}, {0, 1}})->ArgNames({"size", "memif"});

// The software checksum alone (what a PMD without offload costs per datagram, twice: TX
// and RX): bytes per second over one buffer.
void BM_Checksum(benchmark::State& state) {
  std::vector<uint8_t> d(size_t(state.range(0)));
  for (size_t i = 0; i < d.size(); ++i) d[i] = uint8_t(i * 31);
  for (auto _ : state) {
    benchmark::DoNotOptimize(net::UdpChecksum(1, 2, d));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Checksum)->Arg(64)->Arg(1252);

void BM_UdpEchoKernel(benchmark::State& state) {
  const size_t size = size_t(state.range(0));
  UdpOptions o;
  o.gso = o.gro = state.range(1) != 0;
  auto a = UdpSocket::Bind(quic::Address::FromIpPort("127.0.0.1", 0), o);
  auto b = UdpSocket::Bind(quic::Address::FromIpPort("127.0.0.1", 0), o);
  if (!a.ok() || !b.ok()) return state.SkipWithError("sockets");
  const quic::Path ab{(*a)->local(), (*b)->local()};
  const std::vector<uint8_t> payload(size * 32, 0x5a);
  std::vector<uint8_t> buf;
  auto peer_send = [&] {
    for (size_t i = 0; i < kBatch / 32; ++i) (*a)->Send(ab, payload, size);
  };
  auto peer_drain = [&](size_t want) {
    size_t got = 0;
    const uint64_t end = MonotonicNs() + quic::kSecond;
    while (got < want && MonotonicNs() < end) got += (*a)->Receive([](const quic::Path&, std::span<const uint8_t>) {});
    return got;
  };
  UdpSocket& sb = **b;
  auto echo = [&] {
    return EchoBurst(
        buf, [&](auto&& fn) { sb.Receive(fn); },
        [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) { sb.Send(p, d, seg); });
  };
  EchoRounds(state, peer_send, peer_drain, echo);
}
BENCHMARK(BM_UdpEchoKernel)->ArgsProduct({{64, 1200}, {0, 1}})->ArgNames({"size", "gso"});

}  // namespace
}  // namespace qbridge::dp

int main(int argc, char** argv) {
  const std::string prefix = "qbridge_dpbench" + std::to_string(getpid());
  auto args = qbridge::dp::DevEalArgs(prefix, 1024);
  args.erase(std::remove(args.begin(), args.end(), std::string("--no-shconf")), args.end());
  if (auto s = qbridge::dp::InitEal(args); !s.ok()) {
    fprintf(stderr, "EAL: %s\n", s.ToString().c_str());
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::error_code ec;
  std::filesystem::remove_all("/var/run/dpdk/" + prefix, ec);
  const int rc = 0;
  // memif's control channel runs on EAL's interrupt thread, which still handles the removed
  // devices' last messages while exit() tears the process down: about one run in six
  // crashed there (gdb: eal-intr-thread in librte_net_memif). End without the teardown.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(rc);
}
