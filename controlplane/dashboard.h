// The dashboard's static files (controlplane/dashboard/, plus uPlot from npm), embedded in
// the binary at build time by controlplane/dashboard/embed.cmake: the appliance serves them
// itself, with nothing fetched from anywhere else.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace qbridge::cp {

struct DashboardAsset {
  std::string_view path;  // under /dashboard/
  std::string_view type;  // Content-Type
  std::span<const uint8_t> data;
};

std::span<const DashboardAsset> DashboardAssets();

}  // namespace qbridge::cp
