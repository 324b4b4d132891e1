#include "dataplane/dpdk/dpdk_io.h"

#include <algorithm>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_errno.h>
#include <rte_flow.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace qbridge::dp {
namespace {

constexpr size_t kHeaders = net::kEthHeaderLen + net::kIpv4MinHeaderLen + net::kUdpHeaderLen;
constexpr size_t kMinFrame = 60;  // Ethernet minimum without FCS

quic::Address ToAddress(net::Ipv4 ip, uint16_t port) {
  quic::Address a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  v4->sin_family = AF_INET;
  v4->sin_addr.s_addr = htonl(ip);
  v4->sin_port = htons(port);
  a.len = sizeof(sockaddr_in);
  return a;
}

bool FromAddress(const quic::Address& a, net::Ipv4* ip, uint16_t* port) {
  if (a.storage.ss_family != AF_INET) return false;
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a.storage);
  *ip = ntohl(v4->sin_addr.s_addr);
  *port = ntohs(v4->sin_port);
  return true;
}

absl::Status DpdkError(const char* what, int rc) {
  return absl::InternalError(absl::StrCat(what, ": ", rte_strerror(rc < 0 ? -rc : rc)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DpdkPort>> DpdkPort::Start(const DpdkPortConfig& config) {
  std::unique_ptr<DpdkPort> p(new DpdkPort(config));
  const uint16_t port = config.port_id;
  if (!rte_eth_dev_is_valid_port(port))
    return absl::NotFoundError(absl::StrCat("dpdk: no port ", port));
  rte_eth_dev_info info{};
  int rc = rte_eth_dev_info_get(port, &info);
  if (rc < 0) return DpdkError("dpdk: device info", rc);
  p->driver_ = info.driver_name ? info.driver_name : "";
  if (config.queues < 1 || config.queues > info.max_rx_queues || config.queues > info.max_tx_queues) {
    return absl::InvalidArgumentError(absl::StrCat("dpdk: port ", port, " (", p->driver_, ") has ",
                                                   info.max_rx_queues, " RX / ", info.max_tx_queues,
                                                   " TX queues; ", config.queues, " asked for"));
  }
  const int socket = rte_eth_dev_socket_id(port) < 0 ? 0 : rte_eth_dev_socket_id(port);
  const std::string prefix =
      config.pool_prefix.empty() ? absl::StrCat("qb_", port) : config.pool_prefix;
  for (uint16_t q = 0; q < config.queues; ++q) {
    const std::string name = absl::StrCat(prefix, "_", q);
    if (name.size() >= RTE_MEMPOOL_NAMESIZE)
      return absl::InvalidArgumentError(absl::StrCat("dpdk: pool name too long: ", name));
    rte_mempool* pool = rte_pktmbuf_pool_create(name.c_str(), config.mbufs, 256, 0,
                                                RTE_MBUF_DEFAULT_BUF_SIZE, socket);
    if (!pool) return DpdkError(absl::StrCat("dpdk: mbuf pool ", name).c_str(), rte_errno);
    p->pools_.push_back(pool);
  }
  rte_eth_conf conf{};
  if (config.queues > 1) {
    // RSS over the 4-tuple where the PMD hashes; otherwise the PMD spreads (TAP and
    // AF_PACKET fan out by flow in the kernel) or not, and CID steering moves what lands on
    // the wrong worker.
    p->rss_hf_ = (RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_UDP) & info.flow_type_rss_offloads;
    if (p->rss_hf_) {
      conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
      conf.rx_adv_conf.rss_conf.rss_hf = p->rss_hf_;
    }
  }
  if (config.checksum_offload) {
    constexpr uint64_t kTx = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
    constexpr uint64_t kRx = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
    if ((info.tx_offload_capa & kTx) == kTx) conf.txmode.offloads |= kTx, p->tx_csum_ = true;
    if ((info.rx_offload_capa & kRx) == kRx) conf.rxmode.offloads |= kRx, p->rx_csum_ = true;
  }
  p->configured_ = true;  // from here on the destructor must close the port
  rc = rte_eth_dev_configure(port, config.queues, config.queues, &conf);
  if (rc < 0) return DpdkError("dpdk: configure", rc);
  uint16_t nrx = config.rx_desc, ntx = config.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
  for (uint16_t q = 0; q < config.queues; ++q) {
    rte_eth_rxconf rxc = info.default_rxconf;
    rxc.offloads = conf.rxmode.offloads;
    rte_eth_txconf txc = info.default_txconf;
    txc.offloads = conf.txmode.offloads;
    if ((rc = rte_eth_rx_queue_setup(port, q, nrx, socket, &rxc, p->pools_[q])) < 0)
      return DpdkError("dpdk: rx queue", rc);
    if ((rc = rte_eth_tx_queue_setup(port, q, ntx, socket, &txc)) < 0)
      return DpdkError("dpdk: tx queue", rc);
  }
  if (config.mac) {
    rte_ether_addr a;
    std::memcpy(a.addr_bytes, config.mac->data(), 6);
    rte_eth_dev_default_mac_addr_set(port, &a);
  }
  if ((rc = rte_eth_dev_start(port)) < 0) return DpdkError("dpdk: start", rc);
  rte_ether_addr addr;
  rte_eth_macaddr_get(port, &addr);
  std::memcpy(p->mac_.data(), addr.addr_bytes, 6);
  const size_t q = config.queues;
  for (size_t i = 0; q > 1 && i < q * q; ++i)
    p->neighbour_rings_.push_back(std::make_unique<SpscRing<Neighbour>>(64));
  return p;
}

absl::Status DpdkPort::SteerUdpPort(uint16_t udp_port, uint16_t queue) {
  if (queue >= config_.queues) return absl::InvalidArgumentError("dpdk: no such queue");
  rte_flow_attr attr{};
  attr.ingress = 1;
  rte_flow_item_udp udp_spec{}, udp_mask{};
  udp_spec.hdr.dst_port = rte_cpu_to_be_16(udp_port);
  udp_mask.hdr.dst_port = RTE_BE16(0xffff);
  rte_flow_item pattern[4]{};
  pattern[0].type = RTE_FLOW_ITEM_TYPE_ETH;
  pattern[1].type = RTE_FLOW_ITEM_TYPE_IPV4;
  pattern[2].type = RTE_FLOW_ITEM_TYPE_UDP;
  pattern[2].spec = &udp_spec;
  pattern[2].mask = &udp_mask;
  pattern[3].type = RTE_FLOW_ITEM_TYPE_END;
  rte_flow_action_queue to{};
  to.index = queue;
  rte_flow_action actions[2]{};
  actions[0].type = RTE_FLOW_ACTION_TYPE_QUEUE;
  actions[0].conf = &to;
  actions[1].type = RTE_FLOW_ACTION_TYPE_END;
  rte_flow_error err{};
  if (rte_flow_create(config_.port_id, &attr, pattern, actions, &err) == nullptr) {
    return absl::UnavailableError(absl::StrCat("dpdk: port ", config_.port_id, " (", driver_,
                                               ") refused a flow rule for UDP port ", udp_port, ": ",
                                               err.message ? err.message : "no reason given"));
  }
  ++flows_;
  return absl::OkStatus();
}

DpdkPort::~DpdkPort() {
  // The port's descriptors hold mbufs of our pools: release the port before the pools.
  if (configured_) {
    if (flows_ > 0) {
      rte_flow_error err;
      rte_flow_flush(config_.port_id, &err);
    }
    rte_eth_dev_stop(config_.port_id);
    rte_eth_dev_close(config_.port_id);
  }
  for (rte_mempool* pool : pools_) rte_mempool_free(pool);
}

absl::StatusOr<std::unique_ptr<DpdkIo>> DpdkIo::Start(const DpdkIoConfig& config) {
  DpdkPortConfig pc;
  pc.port_id = config.port_id;
  pc.rx_desc = config.rx_desc;
  pc.tx_desc = config.tx_desc;
  pc.mbufs = config.mbufs;
  pc.pool_prefix = config.pool_name.empty() ? absl::StrCat("qb_pool_", config.port_id) : config.pool_name;
  pc.mac = config.mac;
  auto port = DpdkPort::Start(pc);
  if (!port.ok()) return port.status();
  std::unique_ptr<DpdkIo> io = Attach(port->get(), 0, config);
  io->owned_port_ = std::move(*port);
  return io;
}

std::unique_ptr<DpdkIo> DpdkIo::Attach(DpdkPort* port, uint16_t queue, const DpdkIoConfig& config) {
  std::unique_ptr<DpdkIo> io(new DpdkIo(port, queue, config));
  const net::Ipv4 mask = config.prefix_len ? ~net::Ipv4(0) << (32 - config.prefix_len) : 0;
  io->routes_.Add(config.ip & mask, config.prefix_len, 0);
  if (config.gateway) io->routes_.Add(0, 0, config.gateway);
  io->link_local_ = net::LinkLocal(port->mac());
  if (queue == 0) {
    // Gratuitous ARP: neighbours learn (or refresh) where we are.
    io->SendArp(1, net::kBroadcastMac, config.ip, net::Mac{});
    if (config.ip6) io->StartIpv6();
    io->FlushTx();
  }
  return io;
}

DpdkIo::~DpdkIo() {
  FlushTx();
  arp_.Clear([](rte_mbuf*&& m) { rte_pktmbuf_free(m); });
  nd_.Clear([](rte_mbuf*&& m) { rte_pktmbuf_free(m); });
}

void DpdkIo::Learn(const Neighbour& n, uint64_t now) {
  auto release = [&](rte_mbuf*&& q, const net::Mac& mac) {
    std::memcpy(rte_pktmbuf_mtod(q, uint8_t*), mac.data(), 6);  // the destination MAC
    Transmit(&q, 1);
  };
  if (n.v6) return nd_.Learn(n.ip6, n.mac, now, n.for_us, release);
  arp_.Learn(n.ip, n.mac, now, n.for_us, release);
}

void DpdkIo::ShareNeighbour(const Neighbour& n) {
  for (uint16_t q = 0; q < port_->queues(); ++q) {
    if (q == queue_) continue;
    if (port_->neighbours(queue_, q).Enqueue(n)) {
      stats_.neighbours_shared.Inc();
    } else {
      stats_.neighbours_dropped.Inc();  // that queue asks again when its entry times out
    }
  }
}

void DpdkIo::DrainNeighbours(uint64_t now) {
  Neighbour batch[16];
  for (uint16_t q = 0; q < port_->queues(); ++q) {
    if (q == queue_) continue;
    SpscRing<Neighbour>& ring = port_->neighbours(q, queue_);
    for (size_t n; (n = ring.DequeueBurst(batch)) != 0;) {
      stats_.neighbours_received.Inc(n);
      for (size_t i = 0; i < n; ++i) Learn(batch[i], now);
    }
  }
}

void DpdkIo::Transmit(rte_mbuf** pkts, uint16_t n) {
  for (uint16_t i = 0; i < n; ++i) {
    if (tx_count_ == kBurst) FlushTx();
    tx_[tx_count_++] = pkts[i];
  }
}

void DpdkIo::FlushTx() {
  if (tx_count_ == 0) return;
  const uint16_t sent = rte_eth_tx_burst(port_->id(), queue_, tx_.data(), tx_count_);
  for (uint16_t i = 0; i < sent; ++i) {
    stats_.tx_packets.Inc();
    stats_.tx_bytes.Inc(rte_pktmbuf_pkt_len(tx_[i]));
  }
  for (uint16_t i = sent; i < tx_count_; ++i) {  // never spin on a full ring
    stats_.tx_dropped_ring_full.Inc();
    rte_pktmbuf_free(tx_[i]);
  }
  tx_count_ = 0;
}

void DpdkIo::SendArp(uint16_t op, const net::Mac& dst_mac, net::Ipv4 target_ip,
                     const net::Mac& target_mac) {
  uint8_t* p;
  rte_mbuf* m = AllocFrame(kMinFrame, &p);
  if (!m) return;
  std::memset(p, 0, kMinFrame);
  const std::span<uint8_t> f(p, kMinFrame);
  net::WriteEthernet(f, dst_mac, port_->mac(), net::kEtherTypeArp);
  net::WriteArp(f.subspan(net::kEthHeaderLen),
                net::ArpPacket{op, port_->mac(), config_.ip, target_mac, target_ip});
  stats_.tx_arp.Inc();
  Transmit(&m, 1);
}

bool DpdkIo::HandleFrame(rte_mbuf* m, uint64_t now, quic::Path* path,
                         std::span<const uint8_t>* payload) {
  stats_.rx_packets.Inc();
  stats_.rx_bytes.Inc(rte_pktmbuf_pkt_len(m));
  net::Drop drop = net::Drop::kRunt;
  auto count = [&](net::Drop d) {
    stats_.rx_drops[size_t(d)].Inc();
    return false;
  };
  if (m->nb_segs != 1) return count(net::Drop::kRunt);  // jumbo chains: not for QUIC
  const std::span<const uint8_t> frame(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m));
  net::EthHeader eth;
  std::span<const uint8_t> l3;
  if (!net::ParseEthernet(frame, &eth, &l3, &drop)) return count(drop);
  // IPv6 multicast MACs (33:33:...) only for IPv6, whose groups are checked by address.
  const bool ipv6 = eth.ether_type == net::kEtherTypeIpv6 && config_.ip6;
  const bool multicast6 = ipv6 && eth.dst[0] == 0x33 && eth.dst[1] == 0x33;
  if (eth.dst != port_->mac() && eth.dst != net::kBroadcastMac && !multicast6) return count(net::Drop::kNotForUs);
  if (eth.vlan != 0) return count(net::Drop::kNotForUs);  // no VLAN is configured
  if (ipv6) {
    const uint64_t l4_flags = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
    if (port_->rx_checksum_offload() && l4_flags == RTE_MBUF_F_RX_L4_CKSUM_BAD) return count(net::Drop::kBadUdpChecksum);
    const bool l4_checked = port_->rx_checksum_offload() && (l4_flags == RTE_MBUF_F_RX_L4_CKSUM_GOOD ||
                                                             l4_flags == RTE_MBUF_F_RX_L4_CKSUM_NONE);
    return HandleIpv6(eth, l3, now, l4_checked, path, payload);
  }
  if (eth.ether_type == net::kEtherTypeArp) {
    net::ArpPacket arp;
    if (!net::ParseArp(l3, &arp, &drop)) return count(drop);
    stats_.rx_arp.Inc();
    const Neighbour n{arp.sender_ip, arp.sender_mac, arp.target_ip == config_.ip};
    Learn(n, now);
    if (port_->queues() > 1) ShareNeighbour(n);
    const bool for_us = n.for_us;
    if (for_us && arp.op == 1) SendArp(2, arp.sender_mac, arp.sender_ip, arp.sender_mac);
    return false;
  }
  if (eth.ether_type != net::kEtherTypeIpv4) return count(net::Drop::kUnknownEtherType);
  net::Ipv4Header ip;
  std::span<const uint8_t> l4;
  // RX checksum offload: GOOD skips our check, BAD drops, UNKNOWN/NONE checks in software.
  const uint64_t ip_flags = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
  const uint64_t l4_flags = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
  if (port_->rx_checksum_offload() && ip_flags == RTE_MBUF_F_RX_IP_CKSUM_BAD)
    return count(net::Drop::kBadIpChecksum);
  // NONE: the header's integrity was checked but its checksum field is not filled in
  // (virtio with partial checksums): good, and not checkable in software.
  const bool ip_good = port_->rx_checksum_offload() && (ip_flags == RTE_MBUF_F_RX_IP_CKSUM_GOOD ||
                                                        ip_flags == RTE_MBUF_F_RX_IP_CKSUM_NONE);
  if (!net::ParseIpv4(l3, &ip, &l4, &drop, /*verify_checksum=*/!ip_good)) return count(drop);
  if (ip.dst != config_.ip) return count(net::Drop::kNotForUs);
  const uint8_t first = uint8_t(ip.src >> 24);
  if (first == 0 || first == 127 || first >= 224 || ip.src == config_.ip)
    return count(net::Drop::kMartianSource);  // answering it would ARP for nonsense
  if (ip.protocol == net::kIpProtoIcmp) {
    // Echo requests (ping) are answered; other ICMP is counted and dropped.
    if (l4.size() < net::kIcmpHeaderLen || net::Checksum(l4) != 0) return count(net::Drop::kBadIcmp);
    if (l4[0] != 8 || l4[1] != 0) return count(net::Drop::kUnknownProtocol);
    stats_.rx_icmp_echo.Inc();
    ReplyEcho(eth, ip, l4);
    return false;
  }
  if (ip.protocol != net::kIpProtoUdp) return count(net::Drop::kUnknownProtocol);
  net::UdpHeader udp;
  const bool l4_checked = port_->rx_checksum_offload() && (l4_flags == RTE_MBUF_F_RX_L4_CKSUM_GOOD ||
                                                           l4_flags == RTE_MBUF_F_RX_L4_CKSUM_BAD ||
                                                           l4_flags == RTE_MBUF_F_RX_L4_CKSUM_NONE);
  if (l4_checked && l4_flags == RTE_MBUF_F_RX_L4_CKSUM_BAD) return count(net::Drop::kBadUdpChecksum);
  if (!net::ParseUdp(ip, l4, &udp, payload, &drop, /*verify_checksum=*/!l4_checked)) return count(drop);
  if (ip_good && l4_checked) stats_.rx_checksum_offloaded.Inc();
  if (udp.src_port == 0) return count(net::Drop::kMartianSource);
  if (!config_.udp_ports.empty() &&
      std::find(config_.udp_ports.begin(), config_.udp_ports.end(), udp.dst_port) ==
          config_.udp_ports.end()) {
    return count(net::Drop::kClosedPort);
  }
  stats_.rx_udp.Inc();
  path->local = ToAddress(ip.dst, udp.dst_port);
  path->remote = ToAddress(ip.src, udp.src_port);
  return true;
}

void DpdkIo::ReplyEcho(const net::EthHeader& eth, const net::Ipv4Header& ip,
                       std::span<const uint8_t> icmp) {
  const size_t len = net::kEthHeaderLen + net::kIpv4MinHeaderLen + icmp.size();
  const size_t frame_len = std::max(len, kMinFrame);
  uint8_t* p;
  rte_mbuf* m = AllocFrame(frame_len, &p);
  if (!m) return;
  std::memset(p + len, 0, frame_len - len);
  const std::span<uint8_t> f(p, frame_len);
  uint8_t* reply = p + net::kEthHeaderLen + net::kIpv4MinHeaderLen;
  std::memcpy(reply, icmp.data(), icmp.size());
  reply[0] = 0;  // echo reply; identifier, sequence and data stay
  reply[2] = reply[3] = 0;
  const uint16_t c = net::Checksum(std::span<const uint8_t>(reply, icmp.size()));
  reply[2] = uint8_t(c >> 8);
  reply[3] = uint8_t(c);
  net::WriteIpv4(f.subspan(net::kEthHeaderLen), config_.ip, ip.src, net::kIpProtoIcmp,
                 uint16_t(icmp.size()), ip_id_++);
  net::WriteEthernet(f, eth.src, port_->mac(), net::kEtherTypeIpv4);
  Transmit(&m, 1);
}

bool DpdkIo::NextHopReady(const quic::Path& path, uint64_t now) {
  if (path.remote.storage.ss_family == AF_INET6) {
    net::Ipv6 hop;
    const auto* r = reinterpret_cast<const sockaddr_in6*>(&path.remote.storage);
    net::Ipv6 dst;
    std::memcpy(dst.data(), &r->sin6_addr, 16);
    if (!config_.ip6 || !NextHop6(dst, &hop)) return true;  // Send counts it
    bool ask = false;
    const bool ready = nd_.Ready(hop, now, &ask);
    if (ask) {
      SendSolicit(hop);
      FlushTx();
    }
    return ready;
  }
  net::Ipv4 dst, next_hop;
  uint16_t port;
  if (!FromAddress(path.remote, &dst, &port) || !routes_.NextHop(dst, &next_hop)) return true;  // Send counts it
  bool ask = false;
  const bool ready = arp_.Ready(next_hop, now, &ask);
  if (ask) {
    SendArp(1, net::kBroadcastMac, next_hop, net::Mac{});
    FlushTx();
  }
  return ready;
}

rte_mbuf* DpdkIo::AllocFrame(size_t len, uint8_t** p) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  *p = m ? reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, uint16_t(len))) : nullptr;
  if (*p) return m;
  if (m) rte_pktmbuf_free(m);
  stats_.tx_dropped_no_mbuf.Inc();
  return nullptr;
}

void DpdkIo::Send(const quic::Path& path, std::span<const uint8_t> datagrams, size_t segment) {
  if (path.remote.storage.ss_family == AF_INET6) return Send6(path, datagrams, segment);
  net::Ipv4 src, dst, next_hop;
  uint16_t sport, dport;
  if (segment == 0) segment = datagrams.size();
  if (!FromAddress(path.local, &src, &sport) || !FromAddress(path.remote, &dst, &dport) ||
      !routes_.NextHop(dst, &next_hop)) {
    stats_.tx_dropped_no_route.Inc((datagrams.size() + segment - 1) / segment);
    return;
  }
  for (size_t off = 0; off < datagrams.size(); off += segment) {
    const size_t len = std::min(segment, datagrams.size() - off);
    const size_t frame_len = std::max(kHeaders + len, kMinFrame);
    uint8_t* p;
    rte_mbuf* m = AllocFrame(frame_len, &p);
    if (!m) continue;
    const std::span<uint8_t> f(p, frame_len);
    std::memcpy(p + kHeaders, datagrams.data() + off, len);
    if (frame_len > kHeaders + len) std::memset(p + kHeaders + len, 0, frame_len - kHeaders - len);
    const net::TxChecksum csum =
        port_->tx_checksum_offload() ? net::TxChecksum::kOffload : net::TxChecksum::kSoftware;
    net::WriteUdp(f.subspan(net::kEthHeaderLen + net::kIpv4MinHeaderLen), src, dst, sport, dport,
                  uint16_t(len), csum);
    net::WriteIpv4(f.subspan(net::kEthHeaderLen), src, dst, net::kIpProtoUdp,
                   uint16_t(net::kUdpHeaderLen + len), ip_id_++, 64, csum);
    if (csum == net::TxChecksum::kOffload) {
      m->l2_len = net::kEthHeaderLen;
      m->l3_len = net::kIpv4MinHeaderLen;
      m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
      stats_.tx_checksum_offloaded.Inc();
    }
    net::WriteEthernet(f, net::Mac{}, port_->mac(), net::kEtherTypeIpv4);
    if (TransmitVia(arp_, next_hop, m)) SendArp(1, net::kBroadcastMac, next_hop, net::Mac{});
  }
  FlushTx();
}

}  // namespace qbridge::dp
