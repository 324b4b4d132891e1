// The DPDK backend on two ring-PMD ports wired back to back (rte_eth_from_rings): ARP
// resolution, UDP both ways, and a QUIC handshake and echo carried entirely by our
// Ethernet/ARP/IPv4/UDP stack. EAL runs once per test process (--no-huge, no PCI, no
// shared config), so ctest may run these in parallel.
#include <gtest/gtest.h>

#include <string>

#include "dataplane/dpdk/dpdk_io.h"
#include "dataplane/dpdk/eal.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/dpdk_ring_pair.h"
#include "tests/support/quic_udp_pair.h"

namespace qbridge::dp {
namespace {

using qbridge::testing::MonotonicNs;


constexpr net::Ipv4 kIpA = qbridge::testing::DpdkRingPair::kIpA;
constexpr net::Ipv4 kIpB = qbridge::testing::DpdkRingPair::kIpB;

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
  EXPECT_EQ(a_->stats().tx_queued_arp, 1u);
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
  EXPECT_GE(b_->stats().rx_arp, 1u);
  // B learned A from A's request: its answer needs no ARP round.
  const std::vector<uint8_t> back = {'o', 'k'};
  b_->Send(quic::Path{ab.remote, ab.local}, back, back.size());
  EXPECT_EQ(b_->stats().tx_queued_arp, 0u);
  a_->Receive(MonotonicNs(), [&](const quic::Path& p, std::span<const uint8_t> d) {
    at_a.emplace_back(p, std::string(d.begin(), d.end()));
  });
  ASSERT_EQ(at_a.size(), 1u);
  EXPECT_EQ(at_a[0].second, "ok");
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
  EXPECT_EQ(b_->stats().rx_drops[size_t(net::Drop::kClosedPort)], 1u);
}

TEST_F(RingWire, NoRouteIsCountedNotSent) {
  const std::vector<uint8_t> d = {1};
  a_->Send(quic::Path{Addr(kIpA, 1), Addr(net::MakeIpv4(203, 0, 113, 9), 2)}, d, 1);
  EXPECT_EQ(a_->stats().tx_dropped_no_route, 1u);
}

TEST_F(RingWire, QuicHandshakeAndEchoOverOurStack) {
  qbridge::testing::TestTls tls("198.18.0.2");  // verified against the IP SAN
  ASSERT_TRUE(tls.ok());
  quic::EndpointConfig ec;
  ec.retry = quic::RetryMode::kAlways;
  auto ep = quic::ServerEndpoint::Create(*tls.server, ec);
  ASSERT_TRUE(ep.ok());
  qbridge::testing::RecordingEvents server_events, client_events;
  server_events.echo = true;
  (*ep)->set_on_accept([&](quic::Connection& c) {
    server_events.conn = &c;
    return &server_events;
  });
  auto client = quic::Connection::Connect(*tls.client, quic::TransportConfig{}, pair_.ClientPath(),
                                          &client_events, MonotonicNs());
  ASSERT_TRUE(client.ok());
  client_events.conn = client->get();
  quic::Connection& c = **client;
  quic::ServerEndpoint& s = **ep;
  pair_.client = &c;
  pair_.server = &s;
  auto run = [&](const std::function<bool()>& done, uint64_t limit) { return pair_.RunUntil(done, limit); };
  ASSERT_TRUE(run([&] { return client_events.confirmed; }, 10 * quic::kSecond));
  EXPECT_EQ(client_events.alpn, "mqtt");
  auto sid = c.OpenStream();
  ASSERT_TRUE(sid.ok());
  auto payload = std::make_shared<std::vector<uint8_t>>(1 << 20);
  for (size_t i = 0; i < payload->size(); ++i) (*payload)[i] = uint8_t(i * 13 + (i >> 10));
  ASSERT_TRUE(c.Send(*sid, payload, true).ok());
  ASSERT_TRUE(run([&] { return client_events.fin[*sid]; }, 30 * quic::kSecond))
      << "echoed " << client_events.data[*sid].size();
  EXPECT_TRUE(client_events.data[*sid] == *payload);
  EXPECT_EQ(s.stats().retry_sent, 1u);
  EXPECT_GT(b_->stats().rx_udp, 700u);
  EXPECT_EQ(a_->stats().tx_dropped_ring_full + b_->stats().tx_dropped_ring_full, 0u);
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
