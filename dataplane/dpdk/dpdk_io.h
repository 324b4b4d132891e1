// The DPDK packet-I/O backend: one ethdev port (any PMD) with one RX/TX queue pair per
// worker (DpdkPort), and per queue our own Ethernet/ARP/IPv4/UDP handling (and with an
// IPv6 address, IPv6/NDP/ICMPv6/UDP) with the same
// interface as the kernel UDP socket (DpdkIo: Receive -> (path, datagram);
// Send(path, datagrams, segment)), so QUIC endpoints and connections run unchanged on
// either backend.
#pragma once

#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <array>
#include <optional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/api/counters.h"
#include "dataplane/api/ring.h"
#include "dataplane/net/arp_cache.h"
#include "dataplane/net/headers.h"
#include "quic/connection.h"

namespace qbridge::dp {

struct DpdkPortConfig {
  uint16_t port_id = 0;
  uint16_t queues = 1;     // RX/TX queue pairs, one per worker
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
  unsigned mbufs = 8191;   // per queue (each queue has its own pool: no sharing between cores)
  std::string pool_prefix;  // pools are "<prefix>_<queue>"; default "qb_<port>"
  std::optional<net::Mac> mac;  // override the port's MAC (virtual devices)
  bool checksum_offload = true;  // use the port's IPv4/UDP checksum offloads where offered
};

// A neighbour one queue learned from an ARP packet, passed to the port's other queues (ARP
// replies arrive on whichever queue the PMD picks, usually the first).
struct Neighbour {
  net::Ipv4 ip = 0;
  net::Mac mac{};
  bool for_us = false;  // the ARP packet named our address: an entry may be created
  bool v6 = false;      // an IPv6 neighbour (NDP) at ip6 instead
  net::Ipv6 ip6{};
};

// One started port: its queues, their pools, what the PMD offers. Outlives every DpdkIo
// attached to it.
class DpdkPort {
 public:
  // Configures and starts the port (after InitEal): RSS over IPv4/UDP where the PMD has it
  // and there are several queues, checksum offloads where offered.
  static absl::StatusOr<std::unique_ptr<DpdkPort>> Start(const DpdkPortConfig& config);
  ~DpdkPort();
  DpdkPort(const DpdkPort&) = delete;
  DpdkPort& operator=(const DpdkPort&) = delete;

  uint16_t id() const { return config_.port_id; }
  uint16_t queues() const { return config_.queues; }
  const net::Mac& mac() const { return mac_; }
  rte_mempool* pool(uint16_t queue) const { return pools_[queue]; }
  bool rss() const { return rss_hf_ != 0; }
  uint64_t rss_hf() const { return rss_hf_; }
  bool tx_checksum_offload() const { return tx_csum_; }
  bool rx_checksum_offload() const { return rx_csum_; }
  const std::string& driver() const { return driver_; }

  // Asks the NIC to deliver IPv4 UDP to `udp_port` on `queue` (an rte_flow rule), so a
  // bridge's datagrams reach the worker that dialled from that port without a software
  // hop. An error (the PMD has no such rule) leaves steering to the workers.
  absl::Status SteerUdpPort(uint16_t udp_port, uint16_t queue);
  size_t flow_rules() const { return flows_; }

  // Single producer (queue `from`), single consumer (queue `to`) per ring.
  SpscRing<Neighbour>& neighbours(uint16_t from, uint16_t to) {
    return *neighbour_rings_[size_t(from) * config_.queues + to];
  }

 private:
  explicit DpdkPort(const DpdkPortConfig& c) : config_(c) {}
  DpdkPortConfig config_;
  std::vector<rte_mempool*> pools_;
  bool configured_ = false;
  net::Mac mac_{};
  uint64_t rss_hf_ = 0;
  bool tx_csum_ = false;
  bool rx_csum_ = false;
  std::string driver_;
  size_t flows_ = 0;
  std::vector<std::unique_ptr<SpscRing<Neighbour>>> neighbour_rings_;
};

struct DpdkIoConfig {
  uint16_t port_id = 0;
  net::Ipv4 ip = 0;           // our address on this port
  uint8_t prefix_len = 24;    // the connected subnet
  net::Ipv4 gateway = 0;      // default route (0: none)
  uint16_t rx_desc = 1024;    // (Start only: the port's settings)
  uint16_t tx_desc = 1024;
  unsigned mbufs = 8191;
  std::string pool_name;  // default "qb_pool_<port>"
  std::optional<net::Mac> mac;  // override the port's MAC (virtual devices)
  // UDP destination ports accepted (the QUIC listener's); empty: any. Others are dropped and
  // counted as closed_port.
  std::vector<uint16_t> udp_ports;
  // IPv6 on the port too: our address, its on-link prefix, a default router. Without one the
  // port answers no IPv6 (not even NDP) and counts it as an unknown EtherType.
  std::optional<net::Ipv6> ip6;
  uint8_t prefix6_len = 64;
  std::optional<net::Ipv6> gateway6;
};

#define QBRIDGE_DPDK_COUNTERS(X) \
  X(rx_packets)                  \
  X(rx_bytes)                    \
  X(rx_udp)                      \
  X(rx_arp)                      \
  X(rx_icmp_echo)                \
  X(rx_icmp6_echo)               \
  X(rx_ndp)                      \
  X(tx_ndp)                      \
  X(tx_packets)                  \
  X(tx_bytes)                    \
  X(tx_arp)                      \
  X(tx_dropped_no_mbuf)          \
  X(tx_dropped_ring_full)        \
  X(tx_dropped_no_route)         \
  X(tx_dropped_arp)              \
  X(tx_queued_arp)               \
  X(rx_checksum_offloaded)       \
  X(tx_checksum_offloaded)       \
  X(neighbours_shared)           \
  X(neighbours_received)         \
  X(neighbours_dropped)

// Written by the queue's worker, read by other threads (REST's report): relaxed atomics.
struct DpdkIoStats {
#define QBRIDGE_X(name) Counter name;
  QBRIDGE_DPDK_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X
  std::array<Counter, size_t(net::Drop::kCount)> rx_drops{};
};

class DpdkIo {
 public:
  static constexpr uint16_t kBurst = 32;

  // Starts a one-queue port of its own (after InitEal) and attaches to its queue.
  static absl::StatusOr<std::unique_ptr<DpdkIo>> Start(const DpdkIoConfig& config);
  // Attaches to one queue of a started port (which must outlive it). Queue 0 sends a
  // gratuitous ARP (and, with IPv6, an unsolicited advertisement, and has the port accept
  // our solicited-node and all-nodes groups).
  static std::unique_ptr<DpdkIo> Attach(DpdkPort* port, uint16_t queue, const DpdkIoConfig& config);
  ~DpdkIo();
  DpdkIo(const DpdkIo&) = delete;
  DpdkIo& operator=(const DpdkIo&) = delete;

  const net::Mac& mac() const { return port_->mac(); }
  uint16_t queue() const { return queue_; }
  uint16_t port_id() const { return port_->id(); }
  rte_mempool* pool() const { return pool_; }
  const DpdkIoStats& stats() const { return stats_; }
  // The UDP ports accepted from now on (empty: any).
  void set_udp_ports(std::vector<uint16_t> ports) { config_.udp_ports = std::move(ports); }

  // Polls one RX burst: answers ARP, learns neighbours, and calls
  // fn(const quic::Path&, std::span<const uint8_t>) for each UDP datagram to our address.
  // `now` (ns) runs the ARP timers. Returns the number of frames received.
  template <typename Fn>
  size_t Receive(uint64_t now, Fn&& fn);

  // Whether datagrams on `path` can leave now: the next hop's MAC is known. If not, asks
  // for it (once per retry interval). A QUIC connection that writes only when this holds
  // never measures ARP's wait as round-trip time.
  bool NextHopReady(const quic::Path& path, uint64_t now);

  // Sends datagrams laid back to back (each `segment` bytes but the last) from
  // path.local to path.remote: one mbuf each, one TX burst. Unresolved next hops queue in
  // the ARP cache (bounded); a full TX ring drops and counts.
  void Send(const quic::Path& path, std::span<const uint8_t> datagrams, size_t segment);

 private:
  DpdkIo(DpdkPort* port, uint16_t queue, const DpdkIoConfig& c)
      : config_(c), port_(port), queue_(queue), pool_(port->pool(queue)) {}
  bool HandleFrame(rte_mbuf* m, uint64_t now, quic::Path* path, std::span<const uint8_t>* payload);
  // IPv6 (dataplane/dpdk/dpdk_io6.cc): NDP answered and learned from, echo answered, UDP
  // to our address handed up.
  // `l4_checked`: the NIC has verified the UDP checksum (or left a partial sum in it).
  bool HandleIpv6(const net::EthHeader& eth, std::span<const uint8_t> l3, uint64_t now, bool l4_checked,
                  quic::Path* path, std::span<const uint8_t>* payload);
  bool Ours6(const net::Ipv6& a) const { return a == *config_.ip6 || a == link_local_; }
  // The next hop towards `dst` (itself when on link, else the default router).
  bool NextHop6(const net::Ipv6& dst, net::Ipv6* hop) const;
  // A neighbour solicitation for `target` (to its solicited-node group, or `to_mac` when
  // confirming a known neighbour), or our advertisement for `target` to `dst` at `dst_mac`.
  void SendSolicit(const net::Ipv6& target);
  void SendNdp(const net::NdpMessage& m, const net::Ipv6& src, const net::Ipv6& dst, const net::Mac& dst_mac);
  void SendAdvert(const net::Ipv6& target, const net::Ipv6& dst, const net::Mac& dst_mac, bool solicited);
  void ReplyEcho6(const net::EthHeader& eth, const net::Ipv6Header& ip, std::span<const uint8_t> icmp);
  void Send6(const quic::Path& path, std::span<const uint8_t> datagrams, size_t segment);
  // Queue 0 with IPv6: the port accepts our groups, neighbours hear where we are.
  void StartIpv6();
  void SendArp(uint16_t op, const net::Mac& dst_mac, net::Ipv4 target_ip, const net::Mac& target_mac);
  void ReplyEcho(const net::EthHeader& eth, const net::Ipv4Header& ip, std::span<const uint8_t> icmp);
  void Transmit(rte_mbuf** pkts, uint16_t n);
  // An mbuf holding `len` bytes of frame at *p, or null (counted; QUIC's loss recovery resends).
  rte_mbuf* AllocFrame(size_t len, uint8_t** p);
  // Sends a frame (its source MAC written) once `cache` knows the next hop's MAC: now, queued
  // behind the resolution, or dropped (counted). True when the hop must be asked for.
  template <typename Cache, typename Key>
  bool TransmitVia(Cache& cache, const Key& hop, rte_mbuf* m) {
    net::Mac mac;
    bool ask = false;
    switch (cache.Resolve(hop, now_, m, &mac, &ask)) {
      case Cache::Result::kResolved:
        std::memcpy(rte_pktmbuf_mtod(m, uint8_t*), mac.data(), 6);
        Transmit(&m, 1);
        break;
      case Cache::Result::kQueued:
        stats_.tx_queued_arp.Inc();
        break;
      case Cache::Result::kDropped:
        stats_.tx_dropped_arp.Inc();
        rte_pktmbuf_free(m);
        break;
    }
    return ask;
  }
  void FlushTx();
  void Learn(const Neighbour& n, uint64_t now);
  void ShareNeighbour(const Neighbour& n);
  void DrainNeighbours(uint64_t now);

  DpdkIoConfig config_;
  std::unique_ptr<DpdkPort> owned_port_;  // Start(): the port is ours (destroyed last)
  DpdkPort* port_;
  uint16_t queue_;
  rte_mempool* pool_;
  net::RouteTable routes_;
  net::ArpCache<rte_mbuf*> arp_;
  net::NeighbourCache<rte_mbuf*> nd_;  // IPv6 neighbours
  net::Ipv6 link_local_{};             // fe80:: from our MAC (NDP's own address)
  DpdkIoStats stats_;
  uint16_t ip_id_ = 0;
  uint64_t now_ = 0;  // the last Receive's time: ARP timers for packets sent in between
  uint64_t next_arp_expiry_ = 0;
  static constexpr uint64_t kArpTick = 100'000'000;  // ARP timers every 100 ms, not per burst
  std::array<rte_mbuf*, kBurst> tx_{};
  uint16_t tx_count_ = 0;
};

template <typename Fn>
size_t DpdkIo::Receive(uint64_t now, Fn&& fn) {
  now_ = now;
  if (port_->queues() > 1) DrainNeighbours(now);
  rte_mbuf* rx[kBurst];
  const uint16_t n = rte_eth_rx_burst(port_->id(), queue_, rx, kBurst);
  for (uint16_t i = 0; i < n; ++i) {
    quic::Path path;
    std::span<const uint8_t> payload;
    if (HandleFrame(rx[i], now, &path, &payload)) fn(path, payload);
    rte_pktmbuf_free(rx[i]);
  }
  if (now >= next_arp_expiry_) {
    next_arp_expiry_ = now + kArpTick;
    arp_.Expire(
        now, [&](net::Ipv4 ip) { SendArp(1, net::kBroadcastMac, ip, net::Mac{}); },
        [&](rte_mbuf*&& m) {
          stats_.tx_dropped_arp.Inc();
          rte_pktmbuf_free(m);
        });
    if (config_.ip6) {
      nd_.Expire(
          now, [&](const net::Ipv6& ip) { SendSolicit(ip); },
          [&](rte_mbuf*&& m) {
            stats_.tx_dropped_arp.Inc();
            rte_pktmbuf_free(m);
          });
    }
  }
  FlushTx();  // ARP replies and packets released by ARP answers
  return n;
}

}  // namespace qbridge::dp
