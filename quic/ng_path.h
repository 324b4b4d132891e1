// Private to quic/connection*.cc: our Path to ngtcp2's and back, and the bound on the
// vectors one stream write gathers.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstring>

#include "quic/connection.h"

namespace qbridge::quic {

inline ngtcp2_path ToNgPath(const Path& p) {
  ngtcp2_path np{};
  np.local.addr = const_cast<sockaddr*>(p.local.sa());
  np.local.addrlen = p.local.len;
  np.remote.addr = const_cast<sockaddr*>(p.remote.sa());
  np.remote.addrlen = p.remote.len;
  return np;
}

inline Path FromNgPath(const ngtcp2_path& np) {
  Path p;
  std::memcpy(&p.local.storage, np.local.addr, np.local.addrlen);
  p.local.len = np.local.addrlen;
  std::memcpy(&p.remote.storage, np.remote.addr, np.remote.addrlen);
  p.remote.len = np.remote.addrlen;
  return p;
}

inline constexpr size_t kMaxVecs = 16;  // ngtcp2_vecs per writev_stream call

}  // namespace qbridge::quic
