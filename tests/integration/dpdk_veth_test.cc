// The DPDK backend on net_af_packet: one end of a veth pair is the DPDK port, the other end
// is in a network namespace this test makes (198.19.<n>.1/24; the DPDK side is .2) and
// removes at exit. From inside the namespace the kernel's ping is answered, and QUIC
// clients on kernel sockets there (ours, and quiche via node) complete a verified
// handshake, a Retry and a 10 MiB echo with the server hosted on the port. Needs root;
// skipped with a message otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <rte_ethdev.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "dataplane/dpdk/dpdk_io.h"
#include "dataplane/dpdk/eal.h"
#include "dataplane/udp_socket.h"
#include "tests/support/dpdk_echo.h"

namespace qbridge::dp {
namespace {

using qbridge::testing::MonotonicNs;

const int kSubnet = int(getpid() % 250);  // 198.19.<kSubnet>.0/24, inside the namespace only
const std::string kTag = std::to_string(getpid() % 100000);
const std::string kNetns = "qbns" + kTag;
const std::string kHostIf = "qbva" + kTag;  // the DPDK port's end (no address)
const std::string kPeerIf = "qbvb" + kTag;  // in the namespace
const std::string kPeerIp = "198.19." + std::to_string(kSubnet) + ".1";
const std::string kDpdkIpText = "198.19." + std::to_string(kSubnet) + ".2";
const net::Ipv4 kDpdkIp = net::MakeIpv4(198, 19, uint8_t(kSubnet), 2);
bool g_eal_ok = false;
std::string g_skip;

int Sh(const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()); }

// The namespace and the veth pair; false if any step failed (what was made is removed).
bool MakeNamespace() {
  const bool ok =
      Sh("ip netns add " + kNetns) == 0 &&
      Sh("ip link add " + kHostIf + " type veth peer name " + kPeerIf + " netns " + kNetns) == 0 &&
      Sh("ip link set " + kHostIf + " up") == 0 &&
      Sh("ip -n " + kNetns + " addr add " + kPeerIp + "/24 dev " + kPeerIf) == 0 &&
      Sh("ip -n " + kNetns + " link set " + kPeerIf + " up") == 0 &&
      Sh("ip -n " + kNetns + " link set lo up") == 0 &&
      // veth leaves checksums to the receiver (CHECKSUM_PARTIAL), and AF_PACKET hands the
      // unfinished field to DPDK: the namespace's end must finish them itself.
      Sh("ip netns exec " + kNetns + " ethtool -K " + kPeerIf + " tx off") == 0;
  if (!ok) Sh("ip netns del " + kNetns);
  return ok;
}

// A UDP socket made inside the namespace (a thread enters it; the socket stays there).
absl::StatusOr<std::unique_ptr<UdpSocket>> SocketInNamespace() {
  absl::StatusOr<std::unique_ptr<UdpSocket>> out = absl::InternalError("setns");
  std::thread t([&] {
    const int fd = ::open(("/var/run/netns/" + kNetns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    out = UdpSocket::Bind(quic::Address::FromIpPort(kPeerIp, 0));
  });
  t.join();
  return out;
}

class VethTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_skip.empty()) GTEST_SKIP() << g_skip;
    ASSERT_TRUE(g_eal_ok);
    uint16_t port;
    ASSERT_EQ(rte_eth_dev_get_port_by_name("net_af_packet0", &port), 0);
    DpdkIoConfig c;
    c.port_id = port;
    c.ip = kDpdkIp;
    c.pool_name = "qb_veth_pool";
    auto io = DpdkIo::Start(c);
    ASSERT_TRUE(io.ok()) << io.status();
    io_ = std::move(*io);
  }
  void TearDown() override { io_.reset(); }

  std::unique_ptr<DpdkIo> io_;
};

TEST_F(VethTest, PingFromTheNamespaceIsAnswered) {
  std::atomic<bool> stop{false};
  std::thread poll([&] {  // the port belongs to this thread until it is joined
    const uint64_t end = MonotonicNs() + 20 * quic::kSecond;
    while (!stop.load() && MonotonicNs() < end)
      io_->Receive(MonotonicNs(), [](const quic::Path&, std::span<const uint8_t>) {});
  });
  const int rc = Sh("ip netns exec " + kNetns + " ping -c 3 -i 0.2 -W 2 -q " + kDpdkIpText);
  stop = true;
  poll.join();
  EXPECT_EQ(rc, 0) << "ping from the namespace got no answer from the DPDK port";
  EXPECT_GE(io_->stats().rx_icmp_echo.Get(), 3u);
  EXPECT_GE(io_->stats().rx_arp.Get(), 1u);
}

TEST_F(VethTest, KernelQuicClientToDpdkHostedServer) {
  qbridge::testing::DpdkEchoServer server(io_.get());
  ASSERT_TRUE(server.ok());
  auto sock = SocketInNamespace();
  ASSERT_TRUE(sock.ok()) << sock.status();
  EXPECT_TRUE(qbridge::testing::OurClientEchoes(server, **sock, quic::Address::FromIpPort(kDpdkIpText, 14567),
                                                10 << 20))
      << "dpdk rx " << io_->stats().rx_packets.Get() << " (udp " << io_->stats().rx_udp.Get() << ", bad udp checksum "
      << io_->stats().rx_drops[size_t(net::Drop::kBadUdpChecksum)].Get() << "), tx " << io_->stats().tx_packets.Get();
  EXPECT_EQ(server.endpoint().stats().retry_sent, 1u);
}

TEST_F(VethTest, QuicheClientToDpdkHostedServer) {
  if (::access("/usr/bin/node", X_OK) != 0) GTEST_SKIP() << "node is not installed (tools/setup.sh installs it)";
  qbridge::testing::DpdkEchoServer server(io_.get());
  ASSERT_TRUE(server.ok());
  EXPECT_TRUE(qbridge::testing::NodeClientEchoes(server, {"ip", "netns", "exec", kNetns}, kDpdkIpText, 14567,
                                                 10 << 20, qbridge::testing::GetTestCerts().dir + "/veth-node.log"));
  EXPECT_EQ(server.endpoint().stats().retry_sent, 1u);
}

}  // namespace
}  // namespace qbridge::dp

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using namespace qbridge::dp;
  bool made = false;
  if (geteuid() != 0) {
    g_skip = "not root: a network namespace and a veth pair need CAP_NET_ADMIN";
  } else if (!(made = MakeNamespace())) {
    g_skip = "could not make the namespace " + kNetns + " and veth " + kHostIf + " (ip, ethtool)";
  } else {
    auto args = DevEalArgs("qbridge_veth");  // fixed: EAL leaves a directory per prefix
    args.push_back("--vdev=net_af_packet0,iface=" + kHostIf);
    const auto s = InitEal(args);
    g_eal_ok = s.ok();
    if (!s.ok()) fprintf(stderr, "EAL: %s\n", s.ToString().c_str());
  }
  const int rc = RUN_ALL_TESTS();
  if (made) Sh("ip netns del " + kNetns);  // takes the veth pair with it
  return rc;
}
