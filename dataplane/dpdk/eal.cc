#include "dataplane/dpdk/eal.h"

#include <rte_eal.h>
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
    if (rte_eal_init(int(copy.size()), argv.data()) < 0)
      result = absl::InternalError(absl::StrCat("rte_eal_init: ", rte_strerror(rte_errno)));
  });
  return result;
}

std::vector<std::string> DevEalArgs(const std::string& prefix, int memory_mb) {
  return {"qbridge", "-l", "0", "--no-huge", "-m", std::to_string(memory_mb), "--no-pci",
          "--no-shconf", "--no-telemetry", "--file-prefix=" + prefix, "--log-level=lib.eal:error",
          "--log-level=pmd:error"};
}

}  // namespace qbridge::dp
