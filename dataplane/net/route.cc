#include <algorithm>

#include "dataplane/net/arp_cache.h"

namespace qbridge::dp::net {

void RouteTable::Add(Ipv4 dst, uint8_t len, Ipv4 gateway) {
  len = std::min<uint8_t>(len, 32);
  const Ipv4 mask = len == 0 ? 0 : ~Ipv4(0) << (32 - len);
  routes_.push_back(Route{dst & mask, mask, len, gateway});
  std::stable_sort(routes_.begin(), routes_.end(),
                   [](const Route& a, const Route& b) { return a.len > b.len; });
}

bool RouteTable::NextHop(Ipv4 dst, Ipv4* next_hop) const {
  for (const Route& r : routes_) {
    if ((dst & r.mask) == r.dst) {
      *next_hop = r.gateway ? r.gateway : dst;
      return true;
    }
  }
  return false;
}

}  // namespace qbridge::dp::net
