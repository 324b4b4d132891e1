// The DPDK backend facing the kernel through a TAP device (net_tap): the kernel's ping is
// answered by our ICMP code, and a QUIC client on kernel UDP sockets completes a verified
// handshake and a 10 MiB echo with a server endpoint hosted on the DPDK port. Needs root
// and /dev/net/tun; skipped with a message otherwise. Addresses: 198.18.5.0/24 on an
// interface this test creates (it goes away with the process). Name and subnet are
// per process: the kernel tears a tap down after its process exits, and a next test
// reusing the name or the prefix could route into the dying one.
#include <gtest/gtest.h>
#include <rte_ethdev.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "dataplane/dpdk/dpdk_io.h"
#include "dataplane/dpdk/eal.h"
#include "dataplane/udp_socket.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/quic_udp_pair.h"

namespace qbridge::dp {
namespace {

using qbridge::testing::MonotonicNs;

const int kSubnet = 10 + int(getpid() % 200);  // 198.18.<kSubnet>.0/24
const std::string kIface = "qbtap" + std::to_string(getpid() % 100000);
const net::Ipv4 kDpdkIp = net::MakeIpv4(198, 18, uint8_t(kSubnet), 2);
const std::string kKernelIp = "198.18." + std::to_string(kSubnet) + ".1";
const std::string kDpdkIpText = "198.18." + std::to_string(kSubnet) + ".2";
bool g_eal_ok = false;
std::string g_skip;

class TapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_skip.empty()) GTEST_SKIP() << g_skip;
    ASSERT_TRUE(g_eal_ok);
    uint16_t port;
    ASSERT_EQ(rte_eth_dev_get_port_by_name("net_tap0", &port), 0);
    DpdkIoConfig c;
    c.port_id = port;
    c.ip = kDpdkIp;
    c.pool_name = "qb_tap_pool_" + std::to_string(counter_++);
    auto io = DpdkIo::Start(c);
    ASSERT_TRUE(io.ok()) << io.status();
    io_ = std::move(*io);
    ASSERT_EQ(std::system(("ip addr replace " + kKernelIp + "/24 dev " + kIface + " && ip link set " +
                           kIface + " up")
                              .c_str()),
              0);
  }
  void TearDown() override { io_.reset(); }

  static inline int counter_ = 0;
  std::unique_ptr<DpdkIo> io_;
};

TEST_F(TapTest, KernelPingIsAnswered) {
  std::atomic<bool> stop{false};
  std::thread poll([&] {  // the port belongs to this thread until it is joined
    const uint64_t end = MonotonicNs() + 20 * quic::kSecond;
    while (!stop.load() && MonotonicNs() < end)
      io_->Receive(MonotonicNs(), [](const quic::Path&, std::span<const uint8_t>) {});
  });
  const int rc = std::system(("ping -c 3 -i 0.2 -W 2 -q " + kDpdkIpText + " > /dev/null 2>&1").c_str());
  stop = true;
  poll.join();
  EXPECT_EQ(rc, 0) << "the kernel's ping got no answer from the DPDK port";
  EXPECT_GE(io_->stats().rx_icmp_echo, 3u);
  EXPECT_GE(io_->stats().rx_arp, 1u);  // the kernel asked where our address is
}

TEST_F(TapTest, KernelQuicClientToDpdkHostedServer) {
  qbridge::testing::TestTls tls;  // the test certificate names localhost
  ASSERT_TRUE(tls.ok());
  auto ep = quic::ServerEndpoint::Create(*tls.server, quic::EndpointConfig{});
  ASSERT_TRUE(ep.ok());
  qbridge::testing::RecordingEvents server_events, client_events;
  server_events.echo = true;
  (*ep)->set_on_accept([&](quic::Connection& c) {
    server_events.conn = &c;
    return &server_events;
  });
  auto sock = UdpSocket::Bind(quic::Address::FromIpPort(kKernelIp, 0));
  ASSERT_TRUE(sock.ok()) << sock.status();
  const quic::Path path{(*sock)->local(), quic::Address::FromIpPort(kDpdkIpText, 14567)};
  auto client = quic::Connection::Connect(*tls.client, quic::TransportConfig{}, path,
                                          &client_events, MonotonicNs());
  ASSERT_TRUE(client.ok());
  client_events.conn = client->get();
  quic::Connection& c = **client;
  quic::ServerEndpoint& s = **ep;
  std::vector<uint8_t> scratch(64 * 1500);
  auto kernel_emit = [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
    (*sock)->Send(p, d, seg);
  };
  auto dpdk_emit = [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) { io_->Send(p, d, seg); };
  auto run = [&](const std::function<bool()>& done, uint64_t limit) {
    const uint64_t end = MonotonicNs() + limit;
    while (!done() && MonotonicNs() < end) {
      const uint64_t now = MonotonicNs();
      (*sock)->Receive([&](const quic::Path& p, std::span<const uint8_t> d) { c.Read(p, d, now); });
      io_->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) { s.Receive(p, d, now, dpdk_emit); });
      if (c.Expiry() <= now) c.HandleExpiry(now);
      if (s.Expiry() <= now) s.HandleExpiry(now);
      c.Write(now, scratch, 64, kernel_emit);
      s.WriteAll(now, scratch, 64, dpdk_emit);
    }
    return done();
  };
  ASSERT_TRUE(run([&] { return client_events.confirmed; }, 10 * quic::kSecond))
      << "dpdk rx " << io_->stats().rx_packets << " (udp " << io_->stats().rx_udp << ", arp "
      << io_->stats().rx_arp << "), tx " << io_->stats().tx_packets << ", kernel socket rx "
      << (*sock)->stats().rx_datagrams;
  EXPECT_EQ(client_events.alpn, "mqtt");
  auto sid = c.OpenStream();
  ASSERT_TRUE(sid.ok());
  auto payload = std::make_shared<std::vector<uint8_t>>(10 << 20);
  for (size_t i = 0; i < payload->size(); ++i) (*payload)[i] = uint8_t(i * 5 + (i >> 12));
  ASSERT_TRUE(c.Send(*sid, payload, true).ok());
  ASSERT_TRUE(run([&] { return client_events.fin[*sid]; }, 60 * quic::kSecond))
      << "echoed " << client_events.data[*sid].size();
  EXPECT_TRUE(client_events.data[*sid] == *payload);
}

}  // namespace
}  // namespace qbridge::dp

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using qbridge::dp::g_skip;
  if (geteuid() != 0) {
    g_skip = "not root: net_tap needs CAP_NET_ADMIN";
  } else if (access("/dev/net/tun", R_OK | W_OK) != 0) {
    g_skip = "/dev/net/tun is missing";
  } else {
    auto args = qbridge::dp::DevEalArgs("qbridge_tap");
    args.push_back("--vdev=net_tap0,iface=" + qbridge::dp::kIface);
    const auto s = qbridge::dp::InitEal(args);
    qbridge::dp::g_eal_ok = s.ok();
    if (!s.ok()) fprintf(stderr, "EAL: %s\n", s.ToString().c_str());
  }
  return RUN_ALL_TESTS();
}
