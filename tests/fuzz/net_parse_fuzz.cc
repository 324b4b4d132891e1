// libFuzzer target for the dataplane's frame parsers: Ethernet (with 802.1Q), IPv4, UDP and
// ARP on arbitrary bytes. Beyond "no crash": every view a parser hands out lies inside the
// input, and a datagram that parses is rebuilt by the writers into a frame that parses to
// the same addresses, ports and payload.
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
