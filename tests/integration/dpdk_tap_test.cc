// The DPDK backend facing the kernel through a TAP device (net_tap): the kernel's ping is
// answered by our ICMP code, and QUIC clients on kernel UDP sockets (ours, and quiche via
// node) complete a verified handshake, a Retry and a 10 MiB echo with a server endpoint
// hosted on the DPDK port. Needs root
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
#include "tests/support/dpdk_echo.h"
#include "tests/support/quic_test_util.h"

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
  EXPECT_GE(io_->stats().rx_icmp_echo.Get(), 3u);
  EXPECT_GE(io_->stats().rx_arp.Get(), 1u);  // the kernel asked where our address is
}

TEST_F(TapTest, KernelQuicClientToDpdkHostedServer) {
  qbridge::testing::DpdkEchoServer server(io_.get());
  ASSERT_TRUE(server.ok());
  auto sock = UdpSocket::Bind(quic::Address::FromIpPort(kKernelIp, 0));
  ASSERT_TRUE(sock.ok()) << sock.status();
  EXPECT_TRUE(qbridge::testing::OurClientEchoes(server, **sock, quic::Address::FromIpPort(kDpdkIpText, 14567),
                                                10 << 20))
      << "dpdk rx " << io_->stats().rx_packets.Get() << " (udp " << io_->stats().rx_udp.Get() << ", arp "
      << io_->stats().rx_arp.Get() << "), tx " << io_->stats().tx_packets.Get();
  EXPECT_EQ(server.endpoint().stats().retry_sent, 1u);
}

// An independent stack (quiche, via node) as the kernel-side client.
TEST_F(TapTest, QuicheClientToDpdkHostedServer) {
  if (::access("/usr/bin/node", X_OK) != 0) GTEST_SKIP() << "node is not installed (tools/setup.sh installs it)";
  qbridge::testing::DpdkEchoServer server(io_.get());
  ASSERT_TRUE(server.ok());
  EXPECT_TRUE(qbridge::testing::NodeClientEchoes(server, {}, kDpdkIpText, 14567, 10 << 20,
                                                 qbridge::testing::GetTestCerts().dir + "/tap-node.log"));
  EXPECT_EQ(server.endpoint().stats().retry_sent, 1u);
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
