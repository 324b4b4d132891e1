// DPDK's Environment Abstraction Layer, initialised once per process (rte_eal_init cannot
// run twice, not even after rte_eal_cleanup).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace qbridge::dp {

// Runs rte_eal_init with `args` (argv[0] included) the first time; later calls return
// the first call's result.
absl::Status InitEal(const std::vector<std::string>& args);

// The arguments for development and tests: no hugepages, no PCI, no shared config (so
// parallel test processes do not collide), a private file prefix.
std::vector<std::string> DevEalArgs(const std::string& prefix, int memory_mb = 256);

}  // namespace qbridge::dp
