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

// IPv6's pseudo-header (RFC 8200 8.1) as a partial sum, for `len` bytes of `next_header`.
uint32_t Ipv6PseudoSum(const Ipv6& src, const Ipv6& dst, uint8_t next_header, uint32_t len) {
  uint8_t pseudo[40];
  std::memcpy(pseudo, src.data(), 16);
  std::memcpy(pseudo + 16, dst.data(), 16);
  Put32(pseudo + 32, len);
  pseudo[36] = pseudo[37] = pseudo[38] = 0;
  pseudo[39] = next_header;
  return ChecksumPartial(pseudo);
}

// A UDP header with its checksum field 0 (filled in by the caller).
void PutUdpHeader(uint8_t* p, uint16_t src_port, uint16_t dst_port, uint16_t len) {
  Put16(p, src_port);
  Put16(p + 2, dst_port);
  Put16(p + 4, len);
  Put16(p + 6, 0);
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
    case Drop::kBadNdp: return "bad_ndp";
    case Drop::kIpv6Extension: return "ipv6_extension";
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

// The UDP header's fields, the datagram bounded by its length field.
static bool ParseUdpHeader(std::span<const uint8_t> segment, UdpHeader* out,
                           std::span<const uint8_t>* udp, Drop* drop) {
  if (segment.size() < kUdpHeaderLen) return Fail(drop, Drop::kRunt);
  const uint8_t* p = segment.data();
  out->src_port = Get16(p);
  out->dst_port = Get16(p + 2);
  out->length = Get16(p + 4);
  out->checksum = Get16(p + 6);
  if (out->length < kUdpHeaderLen || out->length > segment.size())
    return Fail(drop, Drop::kBadUdpLength);
  *udp = segment.first(out->length);
  return true;
}

bool ParseUdp(const Ipv4Header& ip, std::span<const uint8_t> segment, UdpHeader* out,
              std::span<const uint8_t>* payload, Drop* drop, bool verify_checksum) {
  std::span<const uint8_t> udp;
  if (!ParseUdpHeader(segment, out, &udp, drop)) return false;
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
  PutUdpHeader(p, src_port, dst_port, len);
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

Ipv6 SolicitedNode(const Ipv6& a) {
  Ipv6 s{0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, a[13], a[14], a[15]};
  return s;
}

Mac MulticastMac(const Ipv6& a) { return Mac{0x33, 0x33, a[12], a[13], a[14], a[15]}; }

Ipv6 LinkLocal(const Mac& mac) {
  return Ipv6{0xfe, 0x80, 0, 0, 0, 0, 0, 0, uint8_t(mac[0] ^ 0x02), mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]};
}

uint16_t Ipv6Checksum(const Ipv6& src, const Ipv6& dst, uint8_t next_header, std::span<const uint8_t> l4) {
  const uint16_t c = ChecksumFold(ChecksumPartial(l4, Ipv6PseudoSum(src, dst, next_header, uint32_t(l4.size()))));
  return next_header == kIpProtoUdp && c == 0 ? 0xffff : c;
}

bool ParseIpv6(std::span<const uint8_t> packet, Ipv6Header* out, std::span<const uint8_t>* payload,
               Drop* drop) {
  if (packet.size() < kIpv6HeaderLen) return Fail(drop, Drop::kRunt);
  const uint8_t* p = packet.data();
  if ((p[0] >> 4) != 6) return Fail(drop, Drop::kBadIpHeader);
  out->traffic_class = uint8_t((p[0] & 0x0f) << 4 | p[1] >> 4);
  out->flow_label = Get32(p) & 0xfffff;
  out->payload_len = Get16(p + 4);
  out->next_header = p[6];
  out->hop_limit = p[7];
  std::memcpy(out->src.data(), p + 8, 16);
  std::memcpy(out->dst.data(), p + 24, 16);
  if (kIpv6HeaderLen + out->payload_len > packet.size()) return Fail(drop, Drop::kBadIpHeader);
  if (out->hop_limit == 0) return Fail(drop, Drop::kTtlExpired);
  // Hop-by-hop, routing, fragment, destination options, AH, ESP, mobility, HIP, shim6.
  switch (out->next_header) {
    case 0: case 43: case 44: case 60: case 51: case 50: case 135: case 139: case 140:
      return Fail(drop, Drop::kIpv6Extension);
    default:
      break;
  }
  *payload = packet.subspan(kIpv6HeaderLen, out->payload_len);
  return true;
}

bool ParseUdp6(const Ipv6Header& ip, std::span<const uint8_t> segment, UdpHeader* out,
               std::span<const uint8_t>* payload, Drop* drop, bool verify_checksum) {
  std::span<const uint8_t> udp;
  if (!ParseUdpHeader(segment, out, &udp, drop)) return false;
  *payload = udp.subspan(kUdpHeaderLen);
  if (!verify_checksum) return true;
  if (out->checksum == 0) return Fail(drop, Drop::kBadUdpChecksum);  // mandatory over IPv6
  if (ChecksumFold(ChecksumPartial(udp, Ipv6PseudoSum(ip.src, ip.dst, kIpProtoUdp, out->length))) != 0)
    return Fail(drop, Drop::kBadUdpChecksum);
  return true;
}

bool ParseIcmpv6(const Ipv6Header& ip, std::span<const uint8_t> msg, uint8_t* type, uint8_t* code,
                 Drop* drop) {
  if (msg.size() < 4) return Fail(drop, Drop::kBadIcmp);
  if (Ipv6Checksum(ip.src, ip.dst, kIpProtoIcmpv6, msg) != 0) return Fail(drop, Drop::kBadIcmp);
  *type = msg[0];
  *code = msg[1];
  return true;
}

bool ParseNdp(const Ipv6Header& ip, std::span<const uint8_t> msg, NdpMessage* out, Drop* drop) {
  // RFC 4861 7.1.1/7.1.2: hop limit 255 (never forwarded), code 0, 24 bytes at least, the
  // target not multicast, every option with a non-zero length inside the message.
  if (ip.hop_limit != 255 || msg.size() < 24 || msg[1] != 0) return Fail(drop, Drop::kBadNdp);
  out->type = msg[0];
  if (out->type != kNdpSolicit && out->type != kNdpAdvert) return Fail(drop, Drop::kBadNdp);
  out->router = msg[4] & 0x80;
  out->solicited = msg[4] & 0x40;
  out->override_flag = msg[4] & 0x20;
  std::memcpy(out->target.data(), msg.data() + 8, 16);
  if (out->target[0] == 0xff) return Fail(drop, Drop::kBadNdp);
  // A solicited advertisement goes to the asker, never to a group (7.1.2).
  if (out->type == kNdpAdvert && out->solicited && ip.dst[0] == 0xff) return Fail(drop, Drop::kBadNdp);
  out->has_lladdr = false;
  // Source link-layer address (1) in a solicitation, target link-layer address (2) in an
  // advertisement; others are skipped.
  const uint8_t want = out->type == kNdpSolicit ? 1 : 2;
  for (size_t off = 24; off < msg.size();) {
    if (msg.size() - off < 2) return Fail(drop, Drop::kBadNdp);
    const size_t len = size_t(msg[off + 1]) * 8;
    if (len == 0 || len > msg.size() - off) return Fail(drop, Drop::kBadNdp);
    if (msg[off] == want && len >= 8) {
      out->has_lladdr = true;
      out->lladdr = GetMac(msg.data() + off + 2);
    }
    off += len;
  }
  return true;
}

size_t WriteIpv6(std::span<uint8_t> out, const Ipv6& src, const Ipv6& dst, uint8_t next_header,
                 uint16_t payload_len, uint8_t hop_limit) {
  uint8_t* p = out.data();
  Put32(p, 0x60000000);  // version 6, traffic class 0, flow label 0
  Put16(p + 4, payload_len);
  p[6] = next_header;
  p[7] = hop_limit;
  std::memcpy(p + 8, src.data(), 16);
  std::memcpy(p + 24, dst.data(), 16);
  return kIpv6HeaderLen;
}

size_t WriteUdp6(std::span<uint8_t> out, const Ipv6& src, const Ipv6& dst, uint16_t src_port,
                 uint16_t dst_port, uint16_t payload_len) {
  uint8_t* p = out.data();
  const uint16_t len = uint16_t(kUdpHeaderLen + payload_len);
  PutUdpHeader(p, src_port, dst_port, len);
  Put16(p + 6, Ipv6Checksum(src, dst, kIpProtoUdp, out.first(len)));
  return kUdpHeaderLen;
}

size_t WriteNdp(std::span<uint8_t> out, const Ipv6& src, const Ipv6& dst, const NdpMessage& m) {
  uint8_t* p = out.data();
  std::memset(p, 0, kNdpLen);
  p[0] = m.type;
  if (m.type == kNdpAdvert) p[4] = uint8_t((m.router ? 0x80 : 0) | (m.solicited ? 0x40 : 0) | (m.override_flag ? 0x20 : 0));
  std::memcpy(p + 8, m.target.data(), 16);
  p[24] = m.type == kNdpSolicit ? 1 : 2;  // source / target link-layer address
  p[25] = 1;                               // 8 bytes
  std::memcpy(p + 26, m.lladdr.data(), 6);
  Put16(p + 2, Ipv6Checksum(src, dst, kIpProtoIcmpv6, out.first(kNdpLen)));
  return kNdpLen;
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
