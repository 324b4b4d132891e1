// The DPDK backend on net_memif: a server-role and a client-role port in this process,
// joined through shared memory, carry a verified QUIC handshake and an echo through our
// stack. memif needs EAL's multi-process channel, so this binary runs EAL with a shared
// config under a per-process prefix (removed at exit) rather than --no-shconf.
#include <execinfo.h>
#include <gtest/gtest.h>
#include <signal.h>
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

TEST(MemifWire, QuicHandshakeAndEchoOverMemif) {
  qbridge::testing::DpdkRingPair pair;
  const absl::Status s = pair.CreateMemif();
  ASSERT_TRUE(s.ok()) << s;
  qbridge::testing::QuicEchoThrough(pair);
  pair.a.reset();
  pair.b.reset();
}

}  // namespace
}  // namespace qbridge::dp

// On SIGSEGV, writes the stack with module names to stderr, then dies of the signal as it
// would have: tests/support/retry_pmd_crash.sh retries a run only when the crash is inside
// librte_net_memif, and needs the name to tell.
void NameCrashingModules() {
  void* warm[1];
  backtrace(warm, 1);  // loads the unwinder now, not inside the handler
  struct sigaction sa{};
  sa.sa_flags = SA_RESETHAND;
  sa.sa_handler = [](int sig) {
    void* frames[64];
    const int n = backtrace(frames, 64);
    const char msg[] = "crash: stack (module names) follows\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    backtrace_symbols_fd(frames, n, 2);
    raise(sig);  // the default action now (SA_RESETHAND): the exit status shows the signal
  };
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "skipped: needs root (EAL's shared config, the memif socket under /run)\n");
    return 77;  // ctest: SKIP_RETURN_CODE
  }
  NameCrashingModules();
  const std::string prefix = "qbridge_memif" + std::to_string(getpid());
  auto args = qbridge::dp::DevEalArgs(prefix);
  args.erase(std::remove(args.begin(), args.end(), std::string("--no-shconf")), args.end());
  if (const char* l = std::getenv("QBRIDGE_EAL_LOG")) args.push_back(std::string("--log-level=") + l);
  if (auto s = qbridge::dp::InitEal(args); !s.ok()) {
    fprintf(stderr, "EAL: %s\n", s.ToString().c_str());
    return 1;
  }
  const int rc = RUN_ALL_TESTS();
  std::error_code ec;
  std::filesystem::remove_all("/var/run/dpdk/" + prefix, ec);  // EAL's runtime directory
  // memif's control channel runs on EAL's interrupt thread, which still handles the removed
  // devices' last messages while exit() tears the process down: about one run in six
  // crashed there (gdb: eal-intr-thread in librte_net_memif). End without the teardown.
  qbridge::testing::RemoveTestCertsNow();  // its destructor will not run
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(rc);
}
