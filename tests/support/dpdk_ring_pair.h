// Two DPDK ring-PMD ports wired back to back (rte_eth_from_rings), each with our
// Ethernet/ARP/IPv4/UDP stack (DpdkIo), and a QUIC client on one and a server endpoint on
// the other, driven by one thread: the DPDK path end to end without a NIC. Needs EAL.
#pragma once

#include <rte_eth_ring.h>
#include <rte_ring.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/dpdk/dpdk_io.h"
#include "quic/connection.h"
#include "quic/endpoint.h"
#include "tests/support/quic_udp_pair.h"

namespace qbridge::testing {

class DpdkRingPair {
 public:
  static constexpr dp::net::Ipv4 kIpA = dp::net::MakeIpv4(198, 18, 0, 1);
  static constexpr dp::net::Ipv4 kIpB = dp::net::MakeIpv4(198, 18, 0, 2);

  std::unique_ptr<dp::DpdkIo> a, b;  // a: the client's side, b: the server's
  quic::Connection* client = nullptr;
  quic::ServerEndpoint* server = nullptr;

  absl::Status Create() {
    static int counter = 0;
    const std::string tag = std::to_string(getpid()) + "_" + std::to_string(counter++);
    rte_ring* r1 = rte_ring_create(("qb_r1_" + tag).c_str(), 4096, SOCKET_ID_ANY,
                                   RING_F_SP_ENQ | RING_F_SC_DEQ);
    rte_ring* r2 = rte_ring_create(("qb_r2_" + tag).c_str(), 4096, SOCKET_ID_ANY,
                                   RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!r1 || !r2) return absl::InternalError("rte_ring_create");
    const int pa = rte_eth_from_rings(("qb_a_" + tag).c_str(), &r1, 1, &r2, 1, SOCKET_ID_ANY);
    const int pb = rte_eth_from_rings(("qb_b_" + tag).c_str(), &r2, 1, &r1, 1, SOCKET_ID_ANY);
    if (pa < 0 || pb < 0) return absl::InternalError("rte_eth_from_rings");
    dp::DpdkIoConfig ca;
    ca.port_id = uint16_t(pa);
    ca.ip = kIpA;
    ca.mac = dp::net::Mac{0x02, 0, 0, 0, 0, 0x0a};
    ca.pool_name = "qb_pa_" + tag;
    dp::DpdkIoConfig cb = ca;
    cb.port_id = uint16_t(pb);
    cb.ip = kIpB;
    cb.mac = dp::net::Mac{0x02, 0, 0, 0, 0, 0x0b};
    cb.pool_name = "qb_pb_" + tag;
    auto ia = dp::DpdkIo::Start(ca);
    if (!ia.ok()) return ia.status();
    auto ib = dp::DpdkIo::Start(cb);
    if (!ib.ok()) return ib.status();
    a = std::move(*ia);
    b = std::move(*ib);
    return absl::OkStatus();
  }

  static quic::Address Addr(dp::net::Ipv4 ip, uint16_t port) {
    const std::string s = std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." +
                          std::to_string((ip >> 8) & 255) + "." + std::to_string(ip & 255);
    return quic::Address::FromIpPort(s, port);
  }
  quic::Path ClientPath() const { return {Addr(kIpA, 50000), Addr(kIpB, 14567)}; }
  quic::Timestamp now() const { return MonotonicNs(); }

  // A poll loop over both ports until done() or `limit_ns` of wall time.
  bool RunUntil(const std::function<bool()>& done, uint64_t limit_ns) {
    const uint64_t end = MonotonicNs() + limit_ns;
    std::vector<uint8_t> scratch(64 * 1500);
    auto a_emit = [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) { a->Send(p, d, seg); };
    auto b_emit = [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) { b->Send(p, d, seg); };
    while (!done()) {
      const uint64_t now = MonotonicNs();
      if (now >= end) return false;
      a->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) {
        if (client) client->Read(p, d, now);
      });
      b->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) {
        if (server) server->Receive(p, d, now, b_emit);
      });
      if (client) {
        if (client->Expiry() <= now) client->HandleExpiry(now);
        client->Write(now, scratch, 64, a_emit);
      }
      if (server) {
        if (server->Expiry() <= now) server->HandleExpiry(now);
        server->WriteAll(now, scratch, 64, b_emit);
      }
    }
    return true;
  }
};

}  // namespace qbridge::testing
