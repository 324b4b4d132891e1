// Two DPDK ports wired back to back, each with our Ethernet/ARP/IPv4/UDP stack (DpdkIo),
// and a QUIC client on one and a server endpoint on the other, driven by one thread: the
// DPDK path end to end without a NIC. The ports are ring-PMD ports (rte_eth_from_rings,
// Create) or a memif server/client pair over shared memory (CreateMemif). Needs EAL.
#pragma once

#include <rte_bus_vdev.h>
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

  DpdkRingPair() = default;
  DpdkRingPair(const DpdkRingPair&) = delete;
  DpdkRingPair& operator=(const DpdkRingPair&) = delete;
  ~DpdkRingPair() {
    a.reset();  // closes the ports (and frees their pools) before what they run on goes
    b.reset();
    // memif vdevs are left in place: removing one while EAL's interrupt thread still handles
    // its peer's control messages crashed now and then (DPDK 22.11).
    for (rte_ring* r : rings_) rte_ring_free(r);
  }
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
    rings_ = {r1, r2};
    const int pa = rte_eth_from_rings(("qb_a_" + tag).c_str(), &r1, 1, &r2, 1, SOCKET_ID_ANY);
    const int pb = rte_eth_from_rings(("qb_b_" + tag).c_str(), &r2, 1, &r1, 1, SOCKET_ID_ANY);
    if (pa < 0 || pb < 0) return absl::InternalError("rte_eth_from_rings");
    return Attach(uint16_t(pa), uint16_t(pb), tag);
  }

  // A memif pair in this process: a (client role) and b (server role) share one control
  // socket (abstract, named per process) and exchange packets through shared-memory rings.
  absl::Status CreateMemif() {
    static int counter = 0;
    const std::string tag = std::to_string(getpid()) + "_m" + std::to_string(counter++);
    const std::string sock = "socket=/run/qbridge-memif-" + tag + ".sock,id=0";
    const std::string sa = "net_memif_s" + tag, ca = "net_memif_c" + tag;
    if (rte_vdev_init(sa.c_str(), ("role=server," + sock).c_str()) != 0)
      return absl::InternalError("rte_vdev_init(net_memif server)");
    if (rte_vdev_init(ca.c_str(), ("role=client," + sock).c_str()) != 0)
      return absl::InternalError("rte_vdev_init(net_memif client)");
    uint16_t ps, pc;
    if (rte_eth_dev_get_port_by_name(sa.c_str(), &ps) != 0 || rte_eth_dev_get_port_by_name(ca.c_str(), &pc) != 0)
      return absl::InternalError("memif ports not found");
    if (absl::Status s = Attach(pc, ps, tag); !s.ok()) return s;
    // The two ends connect over the control socket once both are started.
    for (int i = 0; i < 300; ++i) {
      rte_eth_link la{}, lb{};
      rte_eth_link_get_nowait(pc, &la);
      rte_eth_link_get_nowait(ps, &lb);
      if (la.link_status && lb.link_status) return absl::OkStatus();
      usleep(10'000);
    }
    return absl::DeadlineExceededError("memif link did not come up");
  }

  absl::Status Attach(uint16_t pa, uint16_t pb, const std::string& tag) {
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
    // b first: a memif client (a) that starts before its server is refused for good.
    auto ib = dp::DpdkIo::Start(cb);
    if (!ib.ok()) return ib.status();
    auto ia = dp::DpdkIo::Start(ca);
    if (!ia.ok()) return ia.status();
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
 private:
  std::vector<rte_ring*> rings_;
};

}  // namespace qbridge::testing
