// IPv6 on a DPDK queue (with DpdkIoConfig::ip6): neighbour discovery (RFC 4861: we answer
// solicitations for our addresses, learn from solicitations and advertisements, and solicit
// next hops through their solicited-node groups), ICMPv6 echo, and UDP to and from our
// address. No extension headers, no fragments, no router discovery (the default router is
// configured), no duplicate address detection of our own (the address is configured, not
// formed; another host's check for it is answered), no MLD reports (a switch that filters
// multicast by MLD snooping must flood our solicited-node group).

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "dataplane/dpdk/dpdk_io.h"

namespace qbridge::dp {
namespace {

constexpr size_t kHeaders6 = net::kEthHeaderLen + net::kIpv6HeaderLen + net::kUdpHeaderLen;
constexpr size_t kMinFrame = 60;
const net::Ipv6 kAllNodes = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};

quic::Address ToAddress6(const net::Ipv6& ip, uint16_t port) {
  quic::Address a;
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  v6->sin6_family = AF_INET6;
  std::memcpy(&v6->sin6_addr, ip.data(), 16);
  v6->sin6_port = htons(port);
  a.len = sizeof(sockaddr_in6);
  return a;
}

bool FromAddress6(const quic::Address& a, net::Ipv6* ip, uint16_t* port) {
  if (a.storage.ss_family != AF_INET6) return false;
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
  std::memcpy(ip->data(), &v6->sin6_addr, 16);
  *port = ntohs(v6->sin6_port);
  return true;
}

bool IsUnspecified(const net::Ipv6& a) {
  for (uint8_t b : a)
    if (b) return false;
  return true;
}
bool IsLinkLocal(const net::Ipv6& a) { return a[0] == 0xfe && (a[1] & 0xc0) == 0x80; }
bool IsLoopback(const net::Ipv6& a) {
  for (size_t i = 0; i < 15; ++i)
    if (a[i]) return false;
  return a[15] == 1;
}

// Whether `a` and `b` share their first `len` bits.
bool SamePrefix(const net::Ipv6& a, const net::Ipv6& b, uint8_t len) {
  size_t i = 0;
  for (; len >= 8; len = uint8_t(len - 8), ++i)
    if (a[i] != b[i]) return false;
  const uint8_t mask = len ? uint8_t(0xff << (8 - len)) : 0;
  return len == 0 || (a[i] & mask) == (b[i] & mask);
}

}  // namespace

bool DpdkIo::NextHop6(const net::Ipv6& dst, net::Ipv6* hop) const {
  if (IsLinkLocal(dst) || SamePrefix(dst, *config_.ip6, config_.prefix6_len)) {
    *hop = dst;
    return true;
  }
  if (!config_.gateway6) return false;
  *hop = *config_.gateway6;
  return true;
}

void DpdkIo::StartIpv6() {
  // Solicitations for our addresses go to their solicited-node groups, advertisements and
  // the like to all-nodes: the NIC must let those MACs in (or all multicast, if it cannot
  // take a list). net_tap and the like deliver everything anyway.
  rte_ether_addr groups[3];
  const net::Mac macs[3] = {net::MulticastMac(kAllNodes), net::MulticastMac(net::SolicitedNode(*config_.ip6)),
                            net::MulticastMac(net::SolicitedNode(link_local_))};
  for (int i = 0; i < 3; ++i) std::memcpy(groups[i].addr_bytes, macs[i].data(), 6);
  if (rte_eth_dev_set_mc_addr_list(port_->id(), groups, 3) != 0) (void)rte_eth_allmulticast_enable(port_->id());
  // Neighbours that had another MAC for our address learn this one (RFC 4861 7.2.6).
  SendAdvert(*config_.ip6, kAllNodes, net::MulticastMac(kAllNodes), /*solicited=*/false);
}

bool DpdkIo::HandleIpv6(const net::EthHeader& eth, std::span<const uint8_t> l3, uint64_t now, bool l4_checked,
                        quic::Path* path, std::span<const uint8_t>* payload) {
  net::Drop drop = net::Drop::kRunt;
  auto count = [&](net::Drop d) {
    stats_.rx_drops[size_t(d)].Inc();
    return false;
  };
  net::Ipv6Header ip;
  std::span<const uint8_t> l4;
  if (!net::ParseIpv6(l3, &ip, &l4, &drop)) return count(drop);
  const bool to_us = Ours6(ip.dst);
  const bool to_group = ip.dst == kAllNodes || ip.dst == net::SolicitedNode(*config_.ip6) ||
                        ip.dst == net::SolicitedNode(link_local_);
  if (!to_us && !to_group) return count(net::Drop::kNotForUs);
  if (ip.src[0] == 0xff || IsLoopback(ip.src) || Ours6(ip.src)) return count(net::Drop::kMartianSource);
  if (ip.next_header == net::kIpProtoIcmpv6) {
    uint8_t type, code;
    if (!net::ParseIcmpv6(ip, l4, &type, &code, &drop)) return count(drop);
    if (type == net::kNdpSolicit || type == net::kNdpAdvert) {
      net::NdpMessage nd;
      if (!net::ParseNdp(ip, l4, &nd, &drop)) return count(drop);
      stats_.rx_ndp.Inc();
      if (type == net::kNdpSolicit) {
        if (!Ours6(nd.target)) return false;
        if (IsUnspecified(ip.src)) {
          // Another host checking whether our address is taken (duplicate address
          // detection): it is, and everyone hears so (RFC 4861 7.2.4).
          SendAdvert(nd.target, kAllNodes, net::MulticastMac(kAllNodes), /*solicited=*/false);
          return false;
        }
        const net::Mac to = nd.has_lladdr ? nd.lladdr : eth.src;
        if (nd.has_lladdr) {  // the asker is on link at this address: learn it (RFC 4861 7.2.3)
          const Neighbour n{0, nd.lladdr, true, true, ip.src};
          Learn(n, now);
          if (port_->queues() > 1) ShareNeighbour(n);
        }
        SendAdvert(nd.target, ip.src, to, /*solicited=*/true);
        return false;
      }
      // An advertisement updates a neighbour we asked about (no entry is made for one we
      // did not ask about, RFC 4861 7.2.5). One without its address, or unsolicited and
      // not overriding, changes nothing here (this cache has no "stale" mark to set).
      if (!nd.has_lladdr || (!nd.solicited && !nd.override_flag)) return false;
      const Neighbour n{0, nd.lladdr, false, true, nd.target};
      Learn(n, now);
      if (port_->queues() > 1) ShareNeighbour(n);
      return false;
    }
    if (IsUnspecified(ip.src)) return count(net::Drop::kMartianSource);  // only DAD's NS comes from ::
    if (type == net::kIcmpv6EchoRequest && code == 0 && to_us) {
      stats_.rx_icmp6_echo.Inc();
      ReplyEcho6(eth, ip, l4);
      return false;
    }
    return count(net::Drop::kUnknownProtocol);  // other ICMPv6 (router adverts, ...) not used
  }
  if (!to_us || IsUnspecified(ip.src)) return count(net::Drop::kNotForUs);
  if (ip.next_header != net::kIpProtoUdp) return count(net::Drop::kUnknownProtocol);
  net::UdpHeader udp;
  if (!net::ParseUdp6(ip, l4, &udp, payload, &drop, /*verify_checksum=*/!l4_checked)) return count(drop);
  if (l4_checked) stats_.rx_checksum_offloaded.Inc();
  if (udp.src_port == 0) return count(net::Drop::kMartianSource);
  if (!config_.udp_ports.empty() &&
      std::find(config_.udp_ports.begin(), config_.udp_ports.end(), udp.dst_port) == config_.udp_ports.end()) {
    return count(net::Drop::kClosedPort);
  }
  stats_.rx_udp.Inc();
  path->local = ToAddress6(ip.dst, udp.dst_port);
  path->remote = ToAddress6(ip.src, udp.src_port);
  return true;
}

void DpdkIo::SendNdp(const net::NdpMessage& m, const net::Ipv6& src, const net::Ipv6& dst, const net::Mac& dst_mac) {
  const size_t len = net::kEthHeaderLen + net::kIpv6HeaderLen + net::kNdpLen;
  uint8_t* p;
  rte_mbuf* mb = AllocFrame(len, &p);
  if (!mb) return;
  const std::span<uint8_t> f(p, len);
  net::WriteNdp(f.subspan(net::kEthHeaderLen + net::kIpv6HeaderLen), src, dst, m);
  net::WriteIpv6(f.subspan(net::kEthHeaderLen), src, dst, net::kIpProtoIcmpv6, net::kNdpLen, 255);
  net::WriteEthernet(f, dst_mac, port_->mac(), net::kEtherTypeIpv6);
  stats_.tx_ndp.Inc();
  Transmit(&mb, 1);
}

void DpdkIo::SendSolicit(const net::Ipv6& target) {
  net::NdpMessage ns;
  ns.type = net::kNdpSolicit;
  ns.target = target;
  ns.lladdr = port_->mac();
  const net::Ipv6 dst = net::SolicitedNode(target);
  SendNdp(ns, IsLinkLocal(target) ? link_local_ : *config_.ip6, dst, net::MulticastMac(dst));
}

void DpdkIo::SendAdvert(const net::Ipv6& target, const net::Ipv6& dst, const net::Mac& dst_mac, bool solicited) {
  net::NdpMessage na;
  na.type = net::kNdpAdvert;
  na.solicited = solicited;
  na.override_flag = true;
  na.target = target;
  na.lladdr = port_->mac();
  SendNdp(na, target, dst, dst_mac);
}

void DpdkIo::ReplyEcho6(const net::EthHeader& eth, const net::Ipv6Header& ip, std::span<const uint8_t> icmp) {
  const size_t len = net::kEthHeaderLen + net::kIpv6HeaderLen + icmp.size();
  const size_t frame_len = std::max(len, kMinFrame);
  uint8_t* p;
  rte_mbuf* m = AllocFrame(frame_len, &p);
  if (!m) return;
  std::memset(p + len, 0, frame_len - len);
  const std::span<uint8_t> f(p, frame_len);
  uint8_t* reply = p + net::kEthHeaderLen + net::kIpv6HeaderLen;
  std::memcpy(reply, icmp.data(), icmp.size());
  reply[0] = net::kIcmpv6EchoReply;  // identifier, sequence and data stay
  reply[2] = reply[3] = 0;
  const uint16_t c =
      net::Ipv6Checksum(ip.dst, ip.src, net::kIpProtoIcmpv6, std::span<const uint8_t>(reply, icmp.size()));
  reply[2] = uint8_t(c >> 8);
  reply[3] = uint8_t(c);
  net::WriteIpv6(f.subspan(net::kEthHeaderLen), ip.dst, ip.src, net::kIpProtoIcmpv6, uint16_t(icmp.size()));
  net::WriteEthernet(f, eth.src, port_->mac(), net::kEtherTypeIpv6);
  Transmit(&m, 1);
}

void DpdkIo::Send6(const quic::Path& path, std::span<const uint8_t> datagrams, size_t segment) {
  net::Ipv6 src, dst, hop;
  uint16_t sport, dport;
  if (segment == 0) segment = datagrams.size();
  if (!config_.ip6 || !FromAddress6(path.local, &src, &sport) || !FromAddress6(path.remote, &dst, &dport) ||
      !NextHop6(dst, &hop)) {
    stats_.tx_dropped_no_route.Inc((datagrams.size() + segment - 1) / segment);
    return;
  }
  for (size_t off = 0; off < datagrams.size(); off += segment) {
    const size_t len = std::min(segment, datagrams.size() - off);
    const size_t frame_len = std::max(kHeaders6 + len, kMinFrame);
    uint8_t* p;
    rte_mbuf* m = AllocFrame(frame_len, &p);
    if (!m) continue;
    const std::span<uint8_t> f(p, frame_len);
    std::memcpy(p + kHeaders6, datagrams.data() + off, len);
    if (frame_len > kHeaders6 + len) std::memset(p + kHeaders6 + len, 0, frame_len - kHeaders6 - len);
    // Checksums in software: the IPv4 offload flags are not used for IPv6 here.
    net::WriteUdp6(f.subspan(net::kEthHeaderLen + net::kIpv6HeaderLen), src, dst, sport, dport, uint16_t(len));
    net::WriteIpv6(f.subspan(net::kEthHeaderLen), src, dst, net::kIpProtoUdp, uint16_t(net::kUdpHeaderLen + len));
    net::WriteEthernet(f, net::Mac{}, port_->mac(), net::kEtherTypeIpv6);
    if (TransmitVia(nd_, hop, m)) SendSolicit(hop);
  }
  FlushTx();
}

}  // namespace qbridge::dp
