// The DPDK backend facing the kernel through a TAP device (net_tap): the kernel's ping is
// answered by our ICMP code, and QUIC clients on kernel UDP sockets (ours, and quiche via
// node) complete a verified handshake, a Retry and a 10 MiB echo with a server endpoint
// hosted on the DPDK port; the same over IPv6 (the kernel's ping -6 and neighbour
// discovery against ours). Needs root and /dev/net/tun; skipped with a message otherwise.
// Addresses: 198.18.N.0/24 and 2001:2:0:N::/64 (IPv6's benchmarking prefix, RFC 5180) on an
// interface this test creates (it goes away with the process). Name and subnet are
// per process: the kernel tears a tap down after its process exits, and a next test
// reusing the name or the prefix could route into the dying one.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rte_ethdev.h>
#include <sys/socket.h>
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
const std::string kPrefix6 = "2001:2:0:" + std::to_string(kSubnet) + "::";
const std::string kKernelIp6 = kPrefix6 + "1";
const std::string kDpdkIp6Text = kPrefix6 + "2";
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
    net::Ipv6 ip6{};
    ASSERT_EQ(::inet_pton(AF_INET6, kDpdkIp6Text.c_str(), ip6.data()), 1);
    c.ip6 = ip6;
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
  // IPv6 on the kernel's side of the tap (no duplicate address detection: usable at once);
  // false where the kernel has IPv6 off.
  static bool KernelIpv6() {
    return std::system(("ip -6 addr replace " + kKernelIp6 + "/64 dev " + kIface + " nodad > /dev/null 2>&1")
                           .c_str()) == 0;
  }

  // Runs a shell command while a thread polls the port (it owns the port until joined, at
  // most 20 s); the command's exit status.
  int RunWhilePolling(const std::string& command) {
    std::atomic<bool> stop{false};
    std::thread poll([&] {
      const uint64_t end = MonotonicNs() + 20 * quic::kSecond;
      while (!stop.load() && MonotonicNs() < end)
        io_->Receive(MonotonicNs(), [](const quic::Path&, std::span<const uint8_t>) {});
    });
    const int rc = std::system(command.c_str());
    stop = true;
    poll.join();
    return rc;
  }

  static inline int counter_ = 0;
  std::unique_ptr<DpdkIo> io_;
};

TEST_F(TapTest, KernelPingIsAnswered) {
  const int rc = RunWhilePolling("ping -c 3 -i 0.2 -W 2 -q " + kDpdkIpText + " > /dev/null 2>&1");
  EXPECT_EQ(rc, 0) << "the kernel's ping got no answer from the DPDK port";
  EXPECT_GE(io_->stats().rx_icmp_echo.Get(), 3u);
  EXPECT_GE(io_->stats().rx_arp.Get(), 1u);  // the kernel asked where our address is
}

// IPv6: the kernel finds our MAC by neighbour discovery (we answer its solicitation) and
// its ping -6 is answered by our ICMPv6 echo.
TEST_F(TapTest, KernelPing6IsAnsweredAfterNeighbourDiscovery) {
  if (!KernelIpv6()) GTEST_SKIP() << "the kernel has IPv6 off";
  const int rc = RunWhilePolling("ping -6 -c 3 -i 0.2 -W 2 -q " + kDpdkIp6Text + " > /dev/null 2>&1");
  EXPECT_EQ(rc, 0) << "the kernel's ping -6 got no answer from the DPDK port";
  EXPECT_GE(io_->stats().rx_icmp6_echo.Get(), 3u);
  EXPECT_GE(io_->stats().rx_ndp.Get(), 1u);  // the kernel's neighbour solicitation
  EXPECT_GE(io_->stats().tx_ndp.Get(), 1u);  // our advertisement
}

// A QUIC client on a kernel UDP/IPv6 socket to the server on the DPDK port: the kernel
// solicits our address first, and our side learns the kernel's from that solicitation.
TEST_F(TapTest, KernelQuicClientOverIpv6ToDpdkHostedServer) {
  if (!KernelIpv6()) GTEST_SKIP() << "the kernel has IPv6 off";
  qbridge::testing::DpdkEchoServer server(io_.get());
  ASSERT_TRUE(server.ok());
  auto sock = UdpSocket::Bind(quic::Address::FromIpPort(kKernelIp6, 0));
  ASSERT_TRUE(sock.ok()) << sock.status();
  EXPECT_TRUE(qbridge::testing::OurClientEchoes(server, **sock, quic::Address::FromIpPort(kDpdkIp6Text, 14567),
                                                1 << 20))
      << "dpdk rx " << io_->stats().rx_packets.Get() << " (udp " << io_->stats().rx_udp.Get() << ", ndp "
      << io_->stats().rx_ndp.Get() << "), tx " << io_->stats().tx_packets.Get() << " (ndp "
      << io_->stats().tx_ndp.Get() << ")";
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

// Two queues, and a flow rule per bridge port: whatever source port the kernel's datagrams
// come from (without rules the TAP spreads flows over its queues), each bridge port's
// traffic arrives on the queue its rule names.
TEST(TapFlowTest, FlowRulesSteerBridgePortsToTheirQueues) {
  if (!g_skip.empty()) GTEST_SKIP() << g_skip;
  ASSERT_TRUE(g_eal_ok);
  uint16_t port;
  ASSERT_EQ(rte_eth_dev_get_port_by_name("net_tap0", &port), 0);
  DpdkPortConfig pc;
  pc.port_id = port;
  pc.queues = 2;
  pc.pool_prefix = "qb_tapflow";
  auto p = DpdkPort::Start(pc);
  ASSERT_TRUE(p.ok()) << p.status();
  constexpr uint16_t kPorts[2] = {41000, 41001};
  // net_tap turns a flow rule into a TC flower filter with a skbedit action: kernels built
  // without them (this project's CI VM: CONFIG_NET_CLS_FLOWER and CONFIG_NET_ACT_SKBEDIT
  // unset) refuse every rule, and the runtime falls back to steering in the workers.
  if (absl::Status s = (*p)->SteerUdpPort(kPorts[0], 0); !s.ok()) {
    GTEST_SKIP() << "this kernel cannot back net_tap's flow rules (TC flower + skbedit): " << s;
  }
  ASSERT_TRUE((*p)->SteerUdpPort(kPorts[1], 1).ok());
  EXPECT_EQ((*p)->flow_rules(), 2u);
  DpdkIoConfig c;
  c.port_id = port;
  c.ip = kDpdkIp;
  c.udp_ports = {kPorts[0], kPorts[1]};
  std::unique_ptr<DpdkIo> io[2] = {DpdkIo::Attach(p->get(), 0, c), DpdkIo::Attach(p->get(), 1, c)};
  ASSERT_EQ(std::system(("ip addr replace " + kKernelIp + "/24 dev " + kIface + " && ip link set " + kIface +
                         " up").c_str()),
            0);
  // 64 flows: one socket (source port) per datagram, alternating between the two ports.
  constexpr int kFlows = 64;
  std::vector<int> fds;
  for (int i = 0; i < kFlows; ++i) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(kPorts[i % 2]);
    ::inet_pton(AF_INET, kDpdkIpText.c_str(), &to.sin_addr);
    const char msg[] = "flow";
    ASSERT_EQ(::sendto(fd, msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), ssize_t(sizeof(msg)));
  }
  std::vector<uint16_t> seen[2];
  const uint64_t end = MonotonicNs() + 5 * quic::kSecond;
  while (seen[0].size() + seen[1].size() < kFlows && MonotonicNs() < end) {
    for (int q = 0; q < 2; ++q) {
      io[q]->Receive(MonotonicNs(), [&](const quic::Path& path, std::span<const uint8_t>) {
        seen[q].push_back(ntohs(reinterpret_cast<const sockaddr_in*>(&path.local.storage)->sin_port));
      });
    }
  }
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(seen[0].size() + seen[1].size(), size_t(kFlows)) << "datagrams lost (ARP?)";
  EXPECT_EQ(seen[0], std::vector<uint16_t>(seen[0].size(), kPorts[0]));
  EXPECT_EQ(seen[1], std::vector<uint16_t>(seen[1].size(), kPorts[1]));
  io[0].reset();
  io[1].reset();
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
