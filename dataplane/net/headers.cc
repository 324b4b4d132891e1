#include "dataplane/net/headers.h"

#include <cstring>

namespace qbridge::dp::net {
namespace {

uint16_t Get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
void Put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}
Mac GetMac(const uint8_t* p) {
  Mac m;
  std::memcpy(m.data(), p, 6);
  return m;
}

bool Fail(Drop* drop, Drop why) {
  *drop = why;
  return false;
}

}  // namespace

const char* DropName(Drop d) {
  switch (d) {
    case Drop::kRunt: return "runt";
    case Drop::kNotForUs: return "not_for_us";
    case Drop::kUnknownEtherType: return "unknown_ethertype";
    case Drop::kBadIpHeader: return "bad_ip_header";
    case Drop::kBadIpChecksum: return "bad_ip_checksum";
    case Drop::kIpFragment: return "ip_fragment";
    case Drop::kTtlExpired: return "ttl_expired";
    case Drop::kUnknownProtocol: return "unknown_protocol";
    case Drop::kBadUdpLength: return "bad_udp_length";
    case Drop::kBadUdpChecksum: return "bad_udp_checksum";
    case Drop::kBadArp: return "bad_arp";
    case Drop::kBadIcmp: return "bad_icmp";
    case Drop::kMartianSource: return "martian_source";
    case Drop::kClosedPort: return "closed_port";
    case Drop::kCount: break;
  }
  return "unknown";
}

uint32_t ChecksumPartial(std::span<const uint8_t> data, uint32_t initial) {
  // The one's-complement sum is byte-order independent (RFC 1071 2(B)): sum native
  // little-endian words, eight bytes per load (a 32-bit value is two 16-bit words modulo
  // 0xffff), then swap the folded result into network order once.
  const uint8_t* p = data.data();
  size_t n = data.size();
  uint64_t sum = 0;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    sum += (w & 0xffffffff) + (w >> 32);
    p += 8;
    n -= 8;
  }
  if (n >= 4) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    sum += w;
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    sum += w;
    p += 2;
    n -= 2;
  }
  if (n) sum += p[0];  // a trailing byte is the high byte of a network-order word
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  const uint64_t be = uint16_t(sum >> 8 | sum << 8);
  uint64_t total = be + initial;
  while (total >> 32) total = (total & 0xffffffff) + (total >> 32);
  return uint32_t(total);
}

uint16_t ChecksumFold(uint32_t sum) {
  uint64_t s = sum;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(~s & 0xffff);
}

uint16_t UdpChecksum(Ipv4 src, Ipv4 dst, std::span<const uint8_t> udp) {
  uint32_t pseudo = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + kIpProtoUdp +
                    uint32_t(udp.size());
  const uint16_t c = ChecksumFold(ChecksumPartial(udp, pseudo));
  return c == 0 ? 0xffff : c;  // 0 means "no checksum" in UDP (RFC 768)
}

bool ParseEthernet(std::span<const uint8_t> frame, EthHeader* out, std::span<const uint8_t>* payload,
                   Drop* drop) {
  if (frame.size() < kEthHeaderLen) return Fail(drop, Drop::kRunt);
  const uint8_t* p = frame.data();
  out->dst = GetMac(p);
  out->src = GetMac(p + 6);
  out->ether_type = Get16(p + 12);
  size_t off = kEthHeaderLen;
  out->vlan = 0;
  if (out->ether_type == kEtherTypeVlan) {
    if (frame.size() < kEthHeaderLen + 4) return Fail(drop, Drop::kRunt);
    out->vlan = Get16(p + 14) & 0x0fff;
    out->ether_type = Get16(p + 16);
    off += 4;
  }
  *payload = frame.subspan(off);
  return true;
}

bool ParseIpv4(std::span<const uint8_t> packet, Ipv4Header* out, std::span<const uint8_t>* payload,
               Drop* drop, bool verify_checksum) {
  if (packet.size() < kIpv4MinHeaderLen) return Fail(drop, Drop::kRunt);
  const uint8_t* p = packet.data();
  if ((p[0] >> 4) != 4) return Fail(drop, Drop::kBadIpHeader);
  out->header_len = uint8_t((p[0] & 0x0f) * 4);
  if (out->header_len < kIpv4MinHeaderLen) return Fail(drop, Drop::kBadIpHeader);
  out->tos = p[1];
  out->total_len = Get16(p + 2);
  if (out->total_len < out->header_len || out->total_len > packet.size())
    return Fail(drop, Drop::kBadIpHeader);  // frames may be padded; never shorter
  if (verify_checksum && Checksum(packet.first(out->header_len)) != 0)
    return Fail(drop, Drop::kBadIpChecksum);
  out->id = Get16(p + 4);
  const uint16_t frag = Get16(p + 6);
  out->dont_fragment = frag & 0x4000;
  if ((frag & 0x2000) || (frag & 0x1fff)) return Fail(drop, Drop::kIpFragment);
  out->ttl = p[8];
  if (out->ttl == 0) return Fail(drop, Drop::kTtlExpired);
  out->protocol = p[9];
  out->src = Get32(p + 12);
  out->dst = Get32(p + 16);
  *payload = packet.subspan(out->header_len, out->total_len - out->header_len);
  return true;
}

bool ParseUdp(const Ipv4Header& ip, std::span<const uint8_t> segment, UdpHeader* out,
              std::span<const uint8_t>* payload, Drop* drop, bool verify_checksum) {
  if (segment.size() < kUdpHeaderLen) return Fail(drop, Drop::kRunt);
  const uint8_t* p = segment.data();
  out->src_port = Get16(p);
  out->dst_port = Get16(p + 2);
  out->length = Get16(p + 4);
  out->checksum = Get16(p + 6);
  if (out->length < kUdpHeaderLen || out->length > segment.size())
    return Fail(drop, Drop::kBadUdpLength);
  const auto udp = segment.first(out->length);
  if (verify_checksum && out->checksum != 0) {
    const uint32_t pseudo = (ip.src >> 16) + (ip.src & 0xffff) + (ip.dst >> 16) +
                            (ip.dst & 0xffff) + kIpProtoUdp + out->length;
    if (ChecksumFold(ChecksumPartial(udp, pseudo)) != 0) return Fail(drop, Drop::kBadUdpChecksum);
  }
  *payload = udp.subspan(kUdpHeaderLen);
  return true;
}

bool ParseArp(std::span<const uint8_t> body, ArpPacket* out, Drop* drop) {
  if (body.size() < kArpLen) return Fail(drop, Drop::kRunt);
  const uint8_t* p = body.data();
  // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses, request or reply.
  if (Get16(p) != 1 || Get16(p + 2) != kEtherTypeIpv4 || p[4] != 6 || p[5] != 4)
    return Fail(drop, Drop::kBadArp);
  out->op = Get16(p + 6);
  if (out->op != 1 && out->op != 2) return Fail(drop, Drop::kBadArp);
  out->sender_mac = GetMac(p + 8);
  out->sender_ip = Get32(p + 14);
  out->target_mac = GetMac(p + 18);
  out->target_ip = Get32(p + 24);
  return true;
}

size_t WriteEthernet(std::span<uint8_t> out, const Mac& dst, const Mac& src, uint16_t ether_type) {
  std::memcpy(out.data(), dst.data(), 6);
  std::memcpy(out.data() + 6, src.data(), 6);
  Put16(out.data() + 12, ether_type);
  return kEthHeaderLen;
}

size_t WriteIpv4(std::span<uint8_t> out, Ipv4 src, Ipv4 dst, uint8_t protocol, uint16_t payload_len,
                 uint16_t id, uint8_t ttl, TxChecksum csum) {
  uint8_t* p = out.data();
  p[0] = 0x45;
  p[1] = 0;
  Put16(p + 2, uint16_t(kIpv4MinHeaderLen + payload_len));
  Put16(p + 4, id);
  Put16(p + 6, 0x4000);  // DF: QUIC relies on it for PMTUD
  p[8] = ttl;
  p[9] = protocol;
  Put16(p + 10, 0);
  Put32(p + 12, src);
  Put32(p + 16, dst);
  if (csum == TxChecksum::kSoftware) Put16(p + 10, Checksum(out.first(kIpv4MinHeaderLen)));
  return kIpv4MinHeaderLen;
}

size_t WriteUdp(std::span<uint8_t> out, Ipv4 src, Ipv4 dst, uint16_t src_port, uint16_t dst_port,
                uint16_t payload_len, TxChecksum csum) {
  uint8_t* p = out.data();
  const uint16_t len = uint16_t(kUdpHeaderLen + payload_len);
  Put16(p, src_port);
  Put16(p + 2, dst_port);
  Put16(p + 4, len);
  Put16(p + 6, 0);
  if (csum == TxChecksum::kOffload) {
    // The NIC adds header and payload to the pseudo-header sum and complements it.
    const uint32_t pseudo = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) +
                            kIpProtoUdp + len;
    uint32_t sum = pseudo;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    Put16(p + 6, uint16_t(sum));
  } else {
    Put16(p + 6, UdpChecksum(src, dst, out.first(len)));
  }
  return kUdpHeaderLen;
}

size_t WriteArp(std::span<uint8_t> out, const ArpPacket& arp) {
  uint8_t* p = out.data();
  Put16(p, 1);
  Put16(p + 2, kEtherTypeIpv4);
  p[4] = 6;
  p[5] = 4;
  Put16(p + 6, arp.op);
  std::memcpy(p + 8, arp.sender_mac.data(), 6);
  Put32(p + 14, arp.sender_ip);
  std::memcpy(p + 18, arp.target_mac.data(), 6);
  Put32(p + 24, arp.target_ip);
  return kArpLen;
}

}  // namespace qbridge::dp::net
