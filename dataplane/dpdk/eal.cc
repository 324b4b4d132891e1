#include "dataplane/dpdk/eal.h"

#include <pthread.h>
#include <rte_eal.h>
#include <sched.h>
#include <rte_errno.h>

#include <mutex>

#include "absl/strings/str_cat.h"

namespace qbridge::dp {

absl::Status InitEal(const std::vector<std::string>& args) {
  static std::once_flag once;
  static absl::Status result;
  std::call_once(once, [&] {
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    // EAL pins the calling thread to its main lcore, and every thread started from it later
    // (workers, controlplane, REST) would inherit that one CPU: the whole appliance on one
    // core, the controlplane and keepalive timers queued behind polling workers. The
    // thread gets its affinity back; workers are placed by dataplane.worker_cpus.
    cpu_set_t before;
    CPU_ZERO(&before);
    const bool saved = pthread_getaffinity_np(pthread_self(), sizeof(before), &before) == 0;
    if (rte_eal_init(int(copy.size()), argv.data()) < 0)
      result = absl::InternalError(absl::StrCat("rte_eal_init: ", rte_strerror(rte_errno)));
    if (saved) pthread_setaffinity_np(pthread_self(), sizeof(before), &before);
  });
  return result;
}

std::vector<std::string> DevEalArgs(const std::string& prefix, int memory_mb) {
  return {"qbridge", "-l", "0", "--no-huge", "-m", std::to_string(memory_mb), "--no-pci",
          "--no-shconf", "--no-telemetry", "--file-prefix=" + prefix, "--log-level=lib.eal:error",
          "--log-level=pmd:error"};
}

}  // namespace qbridge::dp
