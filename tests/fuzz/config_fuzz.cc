// Arbitrary text as the appliance's config file: parsed and validated (no file or DNS
// checks), it must come back as a config or an error, never a crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "controlplane/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = qbridge::cp::ParseConfig(text, "fuzz.toml", qbridge::cp::ConfigChecks{false, false});
  if (c.ok()) {
    // A config that parses is internally consistent.
    if (c->control.bridges.size() != c->runtime.bridges.size()) __builtin_trap();
  } else if (c.status().message().empty()) {
    __builtin_trap();  // every refusal says why
  }
  return 0;
}
