// The DPDK backend on two ring-PMD ports wired back to back (rte_eth_from_rings): ARP
// resolution, UDP both ways, and a QUIC handshake and echo carried entirely by our
// Ethernet/ARP/IPv4/UDP stack. EAL runs once per test process (--no-huge, no PCI, no
// shared config), so ctest may run these in parallel.
#include <gtest/gtest.h>

#include <string>

#include "dataplane/dpdk/dpdk_io.h"
#include "dataplane/dpdk/eal.h"
#include "tests/support/alloc_count.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/dpdk_pair_echo.h"
#include "tests/support/dpdk_ring_pair.h"
#include "tests/support/quic_udp_pair.h"

namespace qbridge::dp {
namespace {

using qbridge::testing::MonotonicNs;


constexpr net::Ipv4 kIpA = qbridge::testing::DpdkRingPair::kIpA;
constexpr net::Ipv4 kIpB = qbridge::testing::DpdkRingPair::kIpB;
quic::Address Addr(net::Ipv4 ip, uint16_t port) { return qbridge::testing::DpdkRingPair::Addr(ip, port); }

// Two ports joined by two rings: what A transmits, B receives, and back.
class RingWire : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pair_.Create().ok());
    a_ = pair_.a.get();
    b_ = pair_.b.get();
  }
  static quic::Address Addr(net::Ipv4 ip, uint16_t port) {
    return qbridge::testing::DpdkRingPair::Addr(ip, port);
  }

  qbridge::testing::DpdkRingPair pair_;
  DpdkIo* a_ = nullptr;
  DpdkIo* b_ = nullptr;
};

TEST_F(RingWire, ArpThenUdpBothWays) {
  const quic::Path ab{Addr(kIpA, 40000), Addr(kIpB, 14567)};
  const std::vector<uint8_t> hello = {'h', 'e', 'l', 'l', 'o'};
  // B is not resolved yet: the datagram waits for the ARP answer.
  a_->Send(ab, hello, hello.size());
  EXPECT_EQ(a_->stats().tx_queued_arp.Get(), 1u);
  std::vector<std::pair<quic::Path, std::string>> at_b, at_a;
  for (int i = 0; i < 10 && at_b.empty(); ++i) {
    const uint64_t now = MonotonicNs();
    b_->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) {
      at_b.emplace_back(p, std::string(d.begin(), d.end()));
    });
    a_->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) {
      at_a.emplace_back(p, std::string(d.begin(), d.end()));
    });
  }
  ASSERT_EQ(at_b.size(), 1u);
  EXPECT_EQ(at_b[0].second, "hello");
  EXPECT_EQ(at_b[0].first.remote, ab.local);
  EXPECT_EQ(at_b[0].first.local, ab.remote);
  EXPECT_GE(b_->stats().rx_arp.Get(), 1u);
  // B learned A from A's request: its answer needs no ARP round.
  const std::vector<uint8_t> back = {'o', 'k'};
  b_->Send(quic::Path{ab.remote, ab.local}, back, back.size());
  EXPECT_EQ(b_->stats().tx_queued_arp.Get(), 0u);
  a_->Receive(MonotonicNs(), [&](const quic::Path& p, std::span<const uint8_t> d) {
    at_a.emplace_back(p, std::string(d.begin(), d.end()));
  });
  ASSERT_EQ(at_a.size(), 1u);
  EXPECT_EQ(at_a[0].second, "ok");
}

// Each port announces itself once at start (a gratuitous ARP: request, sender and target
// our own address); the peer sees it and does not answer it (it names no address of its).
TEST_F(RingWire, GratuitousArpAtStartIsSeenAndNotAnswered) {
  EXPECT_EQ(a_->stats().tx_arp.Get(), 1u);
  EXPECT_EQ(b_->stats().tx_arp.Get(), 1u);
  for (int i = 0; i < 5; ++i) {
    const uint64_t now = MonotonicNs();
    a_->Receive(now, [](const quic::Path&, std::span<const uint8_t>) {});
    b_->Receive(now, [](const quic::Path&, std::span<const uint8_t>) {});
  }
  EXPECT_EQ(a_->stats().rx_arp.Get(), 1u);
  EXPECT_EQ(b_->stats().rx_arp.Get(), 1u);
  EXPECT_EQ(a_->stats().tx_arp.Get(), 1u);  // no reply to an announcement
  EXPECT_EQ(b_->stats().tx_arp.Get(), 1u);
}

// A writer that asks before sending (a bridge's QUIC connection) gets false until the
// neighbour answered, and no packet of its waits in the ARP queue meanwhile.
TEST_F(RingWire, NextHopReadyAsksAndTurnsTrueOnTheAnswer) {
  const quic::Path ab{Addr(kIpA, 40000), Addr(kIpB, 14567)};
  EXPECT_FALSE(a_->NextHopReady(ab, MonotonicNs()));
  const uint64_t arp_sent = a_->stats().tx_arp.Get();
  EXPECT_FALSE(a_->NextHopReady(ab, MonotonicNs()));  // asked already: no second request
  EXPECT_EQ(a_->stats().tx_arp.Get(), arp_sent);
  for (int i = 0; i < 10 && !a_->NextHopReady(ab, MonotonicNs()); ++i) {
    const uint64_t now = MonotonicNs();
    b_->Receive(now, [](const quic::Path&, std::span<const uint8_t>) {});
    a_->Receive(now, [](const quic::Path&, std::span<const uint8_t>) {});
  }
  EXPECT_TRUE(a_->NextHopReady(ab, MonotonicNs()));
  EXPECT_EQ(a_->stats().tx_queued_arp.Get(), 0u);
}

// Only the listener's port is open: UDP to any other port is dropped and counted.
TEST_F(RingWire, ClosedPortsAreDroppedAndCounted) {
  b_->set_udp_ports({14567});
  const std::vector<uint8_t> d = {'x'};
  a_->Send(quic::Path{Addr(kIpA, 40000), Addr(kIpB, 9999)}, d, 1);
  a_->Send(quic::Path{Addr(kIpA, 40000), Addr(kIpB, 14567)}, d, 1);
  std::vector<uint16_t> ports;
  for (int i = 0; i < 10 && ports.empty(); ++i) {
    const uint64_t now = MonotonicNs();
    b_->Receive(now, [&](const quic::Path& p, std::span<const uint8_t>) {
      ports.push_back(ntohs(reinterpret_cast<const sockaddr_in*>(&p.local.storage)->sin_port));
    });
    a_->Receive(now, [](const quic::Path&, std::span<const uint8_t>) {});
  }
  EXPECT_EQ(ports, std::vector<uint16_t>{14567});
  EXPECT_EQ(b_->stats().rx_drops[size_t(net::Drop::kClosedPort)].Get(), 1u);
}

TEST_F(RingWire, NoRouteIsCountedNotSent) {
  const std::vector<uint8_t> d = {1};
  a_->Send(quic::Path{Addr(kIpA, 1), Addr(net::MakeIpv4(203, 0, 113, 9), 2)}, d, 1);
  EXPECT_EQ(a_->stats().tx_dropped_no_route.Get(), 1u);
}

TEST_F(RingWire, QuicHandshakeAndEchoOverOurStack) { qbridge::testing::QuicEchoThrough(pair_); }

// The per-packet path of the port (RX burst, parse, deliver; build, checksum, TX burst)
// takes nothing from the heap once the neighbour is known.
TEST_F(RingWire, UdpEchoAllocatesNothingPerPacket) {
  if (!qbridge::testing::AllocCounting()) GTEST_SKIP() << "allocations are not counted here";
  const quic::Path ab{Addr(kIpA, 40000), Addr(kIpB, 14567)};
  const std::vector<uint8_t> payload(1200, 0x5a);
  auto pump = [&](int rounds) {
    uint64_t echoed = 0;
    for (int r = 0; r < rounds; ++r) {
      for (int i = 0; i < 32; ++i) a_->Send(ab, payload, payload.size());
      const uint64_t now = MonotonicNs();
      b_->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) { b_->Send(p, d, d.size()); });
      a_->Receive(now, [&](const quic::Path&, std::span<const uint8_t> d) { echoed += d.size() == 1200; });
    }
    return echoed;
  };
  ASSERT_GT(pump(20), 0u);  // ARP, first bursts
  qbridge::testing::AllocScope scope;
  const uint64_t echoed = pump(500);
  const uint64_t allocs = scope.Count();
  EXPECT_GT(echoed, 10'000u);
  EXPECT_EQ(allocs, 0u) << "over " << echoed << " echoed datagrams";
}

// Two queue pairs per port. The wiring is lopsided on purpose: everything A sends arrives on
// B's queue 0, so B's queue 1 gets its ARP answer only through the neighbour ring from
// queue 0. Both of B's queues answer and send from their own TX queue.
TEST(MultiQueue, ArpAnswerOnOneQueueReleasesPacketsWaitingOnAnother) {
  static int counter = 0;
  const std::string tag = std::to_string(getpid()) + "_mq" + std::to_string(counter++);
  auto ring = [&](const char* n) {
    return rte_ring_create(("qb_" + std::string(n) + tag).c_str(), 1024, SOCKET_ID_ANY,
                           RING_F_SP_ENQ | RING_F_SC_DEQ);
  };
  rte_ring* ab = ring("ab");      // A's two TX queues -> B's RX queue 0 (one thread: SP holds)
  rte_ring* unused = ring("un");  // B's RX queue 1: nothing ever arrives there from A
  rte_ring* ba0 = ring("b0");     // B's TX queue 0 -> A's RX queue 0
  rte_ring* ba1 = ring("b1");     // B's TX queue 1 -> A's RX queue 1
  ASSERT_TRUE(ab && unused && ba0 && ba1);
  rte_ring* a_rx[2] = {ba0, ba1};
  rte_ring* a_tx[2] = {ab, ab};
  rte_ring* b_rx[2] = {ab, unused};
  rte_ring* b_tx[2] = {ba0, ba1};
  const int pa = rte_eth_from_rings(("qb_mqa_" + tag).c_str(), a_rx, 2, a_tx, 2, SOCKET_ID_ANY);
  const int pb = rte_eth_from_rings(("qb_mqb_" + tag).c_str(), b_rx, 2, b_tx, 2, SOCKET_ID_ANY);
  ASSERT_GE(pa, 0);
  ASSERT_GE(pb, 0);
  DpdkPortConfig pca;
  pca.port_id = uint16_t(pa);
  pca.queues = 2;
  pca.mbufs = 2047;
  pca.pool_prefix = "qb_mqa" + tag;
  pca.mac = net::Mac{0x02, 0, 0, 0, 0, 0x1a};
  DpdkPortConfig pcb = pca;
  pcb.port_id = uint16_t(pb);
  pcb.pool_prefix = "qb_mqb" + tag;
  pcb.mac = net::Mac{0x02, 0, 0, 0, 0, 0x1b};
  auto port_a = DpdkPort::Start(pca);
  ASSERT_TRUE(port_a.ok()) << port_a.status();
  auto port_b = DpdkPort::Start(pcb);
  ASSERT_TRUE(port_b.ok()) << port_b.status();
  EXPECT_EQ((*port_b)->queues(), 2);
  DpdkIoConfig ca;
  ca.ip = kIpA;
  DpdkIoConfig cb;
  cb.ip = kIpB;
  std::unique_ptr<DpdkIo> a[2], b[2];
  for (uint16_t q = 0; q < 2; ++q) {
    a[q] = DpdkIo::Attach(port_a->get(), q, ca);
    b[q] = DpdkIo::Attach(port_b->get(), q, cb);
  }
  // The gratuitous ARPs went out from queue 0 of each side; drain them so that what follows
  // starts from empty caches on B's queue 1.
  const uint64_t t0 = MonotonicNs();
  std::vector<std::string> at_a;
  auto poll_all = [&](uint64_t now) {
    for (uint16_t q = 0; q < 2; ++q) {
      b[q]->Receive(now, [](const quic::Path&, std::span<const uint8_t>) {});
      a[q]->Receive(now, [&](const quic::Path&, std::span<const uint8_t> d) {
        at_a.emplace_back(d.begin(), d.end());
      });
    }
  };
  poll_all(t0);
  at_a.clear();
  // B's queue 1 sends to A, which it has to resolve: its request leaves on TX queue 1, A's
  // answer arrives on B's RX queue 0, and queue 0 passes it on.
  const std::vector<uint8_t> hello = {'q', '1'};
  b[1]->Send(quic::Path{Addr(kIpB, 14567), Addr(kIpA, 40000)}, hello, hello.size());
  for (int i = 0; i < 20 && at_a.empty(); ++i) poll_all(MonotonicNs());
  ASSERT_EQ(at_a.size(), 1u);
  EXPECT_EQ(at_a[0], "q1");
  // Nothing ever reached B's queue 1 from the wire: what it knows came over the ring.
  EXPECT_EQ(b[1]->stats().rx_packets.Get(), 0u);
  EXPECT_GE(b[1]->stats().neighbours_received.Get(), 1u);
  EXPECT_GE(b[0]->stats().neighbours_shared.Get(), 1u);
  // B's queue 0 sends from its own TX queue with what it learned.
  at_a.clear();
  b[0]->Send(quic::Path{Addr(kIpB, 14567), Addr(kIpA, 40001)}, hello, hello.size());
  for (int i = 0; i < 20 && at_a.empty(); ++i) poll_all(MonotonicNs());
  ASSERT_EQ(at_a.size(), 1u);
  for (auto& io : a) io.reset();
  for (auto& io : b) io.reset();
}

// A queue count the PMD cannot give is refused with the numbers, not a crash.
TEST(MultiQueue, TooManyQueuesIsAClearError) {
  static int counter = 0;
  const std::string tag = std::to_string(getpid()) + "_tq" + std::to_string(counter++);
  rte_ring* r = rte_ring_create(("qb_tq" + tag).c_str(), 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  ASSERT_NE(r, nullptr);
  const int p = rte_eth_from_rings(("qb_tqp_" + tag).c_str(), &r, 1, &r, 1, SOCKET_ID_ANY);
  ASSERT_GE(p, 0);
  DpdkPortConfig pc;
  pc.port_id = uint16_t(p);
  pc.queues = 4;
  pc.pool_prefix = "qb_tq" + tag;
  auto port = DpdkPort::Start(pc);
  ASSERT_FALSE(port.ok());
  EXPECT_NE(port.status().message().find("4 asked for"), std::string::npos) << port.status();
}

}  // namespace
}  // namespace qbridge::dp

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // One EAL per process, before any test (gtest_discover_tests runs each test in its own
  // process, so each gets its own --no-shconf EAL). A fixed prefix: EAL still makes a
  // /var/run/dpdk/<prefix> directory, and one per pid would pile up.
  const auto status = qbridge::dp::InitEal(qbridge::dp::DevEalArgs("qbridge_unit"));
  if (!status.ok()) {
    fprintf(stderr, "EAL: %s\n", status.ToString().c_str());
    return 1;
  }
  return RUN_ALL_TESTS();
}
