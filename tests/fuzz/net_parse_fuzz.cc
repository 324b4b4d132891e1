// libFuzzer target for the dataplane's frame parsers: Ethernet (with 802.1Q), IPv4, IPv6,
// UDP (over both), ARP and NDP on arbitrary bytes. Beyond "no crash": every view a parser
// hands out lies inside the input, and a datagram that parses is rebuilt by the writers into
// a frame that parses to the same addresses, ports and payload (or NDP target and address).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dataplane/net/headers.h"

using namespace qbridge::dp::net;

namespace {
void Check(bool ok) {
  if (!ok) __builtin_trap();
}
bool Inside(std::span<const uint8_t> inner, const uint8_t* data, size_t size) {
  return inner.empty() || (inner.data() >= data && inner.data() + inner.size() <= data + size);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> frame(data, size);
  EthHeader eth;
  std::span<const uint8_t> l3, l4, payload;
  Drop drop;
  if (!ParseEthernet(frame, &eth, &l3, &drop)) return 0;
  Check(Inside(l3, data, size));
  if (eth.ether_type == kEtherTypeArp) {
    ArpPacket arp;
    if (ParseArp(l3, &arp, &drop)) {
      std::vector<uint8_t> out(kArpLen);
      WriteArp(out, arp);
      ArpPacket again;
      Check(ParseArp(out, &again, &drop) && again.sender_ip == arp.sender_ip &&
            again.target_ip == arp.target_ip && again.op == arp.op);
    }
    return 0;
  }
  if (eth.ether_type == kEtherTypeIpv6) {
    Ipv6Header ip6;
    if (!ParseIpv6(l3, &ip6, &l4, &drop)) return 0;
    Check(Inside(l4, data, size));
    if (ip6.next_header == kIpProtoIcmpv6) {
      uint8_t type, code;
      NdpMessage n;
      if (!ParseIcmpv6(ip6, l4, &type, &code, &drop) || !ParseNdp(ip6, l4, &n, &drop)) return 0;
      // Ours, written for the same message, parses to the same target and address.
      n.has_lladdr = true;
      std::vector<uint8_t> pkt(kIpv6HeaderLen + kNdpLen);
      WriteNdp(std::span(pkt).subspan(kIpv6HeaderLen), ip6.src, ip6.dst, n);
      WriteIpv6(pkt, ip6.src, ip6.dst, kIpProtoIcmpv6, kNdpLen, 255);
      Ipv6Header again;
      NdpMessage n2;
      std::span<const uint8_t> m2;
      Check(ParseIpv6(pkt, &again, &m2, &drop) && ParseIcmpv6(again, m2, &type, &code, &drop) &&
            ParseNdp(again, m2, &n2, &drop) && n2.target == n.target && n2.lladdr == n.lladdr);
      return 0;
    }
    if (ip6.next_header != kIpProtoUdp) return 0;
    UdpHeader udp;
    if (!ParseUdp6(ip6, l4, &udp, &payload, &drop)) return 0;
    Check(Inside(payload, data, size));
    std::vector<uint8_t> pkt(kIpv6HeaderLen + kUdpHeaderLen + payload.size());
    if (!payload.empty()) std::memcpy(pkt.data() + kIpv6HeaderLen + kUdpHeaderLen, payload.data(), payload.size());
    WriteUdp6(std::span(pkt).subspan(kIpv6HeaderLen), ip6.src, ip6.dst, udp.src_port, udp.dst_port,
              uint16_t(payload.size()));
    WriteIpv6(pkt, ip6.src, ip6.dst, kIpProtoUdp, uint16_t(kUdpHeaderLen + payload.size()), ip6.hop_limit);
    Ipv6Header again;
    UdpHeader udp2;
    std::span<const uint8_t> l4b, payload2;
    Check(ParseIpv6(pkt, &again, &l4b, &drop) && ParseUdp6(again, l4b, &udp2, &payload2, &drop) &&
          again.src == ip6.src && again.dst == ip6.dst && udp2.src_port == udp.src_port &&
          payload2.size() == payload.size() &&
          (payload.empty() || std::memcmp(payload2.data(), payload.data(), payload.size()) == 0));
    return 0;
  }
  Ipv4Header ip;
  if (!ParseIpv4(l3, &ip, &l4, &drop)) return 0;
  Check(Inside(l4, data, size));
  if (ip.protocol != kIpProtoUdp) return 0;
  UdpHeader udp;
  if (!ParseUdp(ip, l4, &udp, &payload, &drop)) return 0;
  Check(Inside(payload, data, size));
  // Rebuild and parse again.
  std::vector<uint8_t> f(kEthHeaderLen + kIpv4MinHeaderLen + kUdpHeaderLen + payload.size());
  WriteEthernet(f, eth.dst, eth.src, kEtherTypeIpv4);
  if (!payload.empty())
    std::memcpy(f.data() + kEthHeaderLen + kIpv4MinHeaderLen + kUdpHeaderLen, payload.data(),
                payload.size());
  WriteUdp(std::span(f).subspan(kEthHeaderLen + kIpv4MinHeaderLen), ip.src, ip.dst, udp.src_port,
           udp.dst_port, uint16_t(payload.size()));
  WriteIpv4(std::span(f).subspan(kEthHeaderLen), ip.src, ip.dst, kIpProtoUdp,
            uint16_t(kUdpHeaderLen + payload.size()), ip.id, ip.ttl);
  EthHeader eth2;
  Ipv4Header ip2;
  UdpHeader udp2;
  std::span<const uint8_t> l3b, l4b, payload2;
  Check(ParseEthernet(f, &eth2, &l3b, &drop) && ParseIpv4(l3b, &ip2, &l4b, &drop) &&
        ParseUdp(ip2, l4b, &udp2, &payload2, &drop));
  Check(ip2.src == ip.src && ip2.dst == ip.dst && udp2.src_port == udp.src_port &&
        udp2.dst_port == udp.dst_port && payload2.size() == payload.size() &&
        (payload.empty() || std::memcmp(payload2.data(), payload.data(), payload.size()) == 0));
  return 0;
}
