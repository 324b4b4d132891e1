// Test helpers: byte vectors from hex text, and packets decoded through the real framer.
#pragma once

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qbridge::testing {

// "10 0c 00 04 'MQTT'" -> bytes. Hex pairs, with quoted ASCII runs allowed.
inline std::vector<uint8_t> Hex(std::string_view text) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '\'') {
      const size_t end = text.find('\'', i + 1);
      for (size_t j = i + 1; j < end; ++j) out.push_back(uint8_t(text[j]));
      i = end + 1;
    } else {
      out.push_back(uint8_t(std::stoi(std::string(text.substr(i, 2)), nullptr, 16)));
      i += 2;
    }
  }
  return out;
}

inline std::vector<uint8_t> Concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace qbridge::testing
