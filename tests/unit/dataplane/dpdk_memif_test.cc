// The DPDK backend on net_memif: a server-role and a client-role port in this process,
// joined through shared memory, carry a verified QUIC handshake and an echo through our
// stack. memif needs EAL's multi-process channel, so this binary runs EAL with a shared
// config under a per-process prefix (removed at exit) rather than --no-shconf.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "dataplane/dpdk/eal.h"
#include "tests/support/dpdk_pair_echo.h"

namespace qbridge::dp {
namespace {

bool eal_started = false;  // not as an ordinary user: EAL's shared config needs root

TEST(MemifWire, QuicHandshakeAndEchoOverMemif) {
  if (!eal_started) GTEST_SKIP() << "needs root (EAL's shared config, a socket under /run)";
  qbridge::testing::DpdkRingPair pair;
  const absl::Status s = pair.CreateMemif();
  ASSERT_TRUE(s.ok()) << s;
  qbridge::testing::QuicEchoThrough(pair);
  pair.a.reset();
  pair.b.reset();
}

}  // namespace
}  // namespace qbridge::dp

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (geteuid() != 0) return RUN_ALL_TESTS();
  const std::string prefix = "qbridge_memif" + std::to_string(getpid());
  auto args = qbridge::dp::DevEalArgs(prefix);
  args.erase(std::remove(args.begin(), args.end(), std::string("--no-shconf")), args.end());
  if (const char* l = std::getenv("QBRIDGE_EAL_LOG")) args.push_back(std::string("--log-level=") + l);
  if (auto s = qbridge::dp::InitEal(args); !s.ok()) {
    fprintf(stderr, "EAL: %s\n", s.ToString().c_str());
    return 1;
  }
  qbridge::dp::eal_started = true;
  const int rc = RUN_ALL_TESTS();
  std::error_code ec;
  std::filesystem::remove_all("/var/run/dpdk/" + prefix, ec);  // EAL's runtime directory
  // memif's control channel runs on EAL's interrupt thread, which still handles the removed
  // devices' last messages while exit() tears the process down: about one run in six
  // crashed there (gdb: eal-intr-thread in librte_net_memif). End without the teardown.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(rc);
}
