// Ethernet, ARP, IPv4, IPv6, UDP, ICMP and ICMPv6 with NDP's neighbour messages, parsed
// field by field from wire bytes (never by casting packed structs onto them) and written the
// same way. No DPDK here: the poll loop hands in a frame's bytes, and tests and fuzzers do
// the same.
#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace qbridge::dp::net {

using Mac = std::array<uint8_t, 6>;
inline constexpr Mac kBroadcastMac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// IPv4 addresses in host byte order.
using Ipv4 = uint32_t;
constexpr Ipv4 MakeIpv4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return Ipv4(a) << 24 | Ipv4(b) << 16 | Ipv4(c) << 8 | Ipv4(d);
}

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86DD;
inline constexpr uint8_t kIpProtoIcmpv6 = 58;
inline constexpr uint8_t kIpProtoIcmp = 1;
inline constexpr uint8_t kIpProtoUdp = 17;

inline constexpr size_t kEthHeaderLen = 14;
inline constexpr size_t kIpv4MinHeaderLen = 20;
inline constexpr size_t kUdpHeaderLen = 8;
inline constexpr size_t kArpLen = 28;
inline constexpr size_t kIcmpHeaderLen = 8;
inline constexpr size_t kIpv6HeaderLen = 40;
inline constexpr size_t kNdpLen = 32;  // NS/NA with one link-layer address option

// IPv6 addresses in network byte order.
using Ipv6 = std::array<uint8_t, 16>;
// ff02::1:ffXX:XXXX, where a neighbour solicitation for `a` is sent (RFC 4291 2.7.1).
Ipv6 SolicitedNode(const Ipv6& a);
// 33:33:XX:XX:XX:XX, the Ethernet address of IPv6 multicast `a` (RFC 2464 7).
Mac MulticastMac(const Ipv6& a);
// fe80::/64 with the interface id made from `mac` (modified EUI-64, RFC 4291 2.5.1).
Ipv6 LinkLocal(const Mac& mac);

// Why a frame was not for us, or not acceptable. Each has a per-core counter.
enum class Drop : uint8_t {
  kRunt,             // shorter than the headers it claims
  kNotForUs,         // another MAC (and not broadcast) or another IP
  kUnknownEtherType,
  kBadIpHeader,      // version, IHL, total length
  kBadIpChecksum,
  kIpFragment,       // no reassembly: QUIC datagrams are never fragmented (DF)
  kTtlExpired,
  kUnknownProtocol,
  kBadUdpLength,
  kBadUdpChecksum,
  kBadArp,
  kBadIcmp,
  kMartianSource,    // a source no peer can have: 0/8, 127/8, multicast, broadcast, ours, port 0
  kClosedPort,       // UDP to a port nothing listens on
  kBadNdp,           // a neighbour message RFC 4861 says to ignore (hop limit, code, options)
  kIpv6Extension,    // an extension header before the transport (QUIC never sends one)
  kCount,
};
const char* DropName(Drop d);

struct EthHeader {
  Mac dst, src;
  uint16_t ether_type;
  uint16_t vlan = 0;  // 802.1Q tag's VLAN id, 0 if untagged
};

struct Ipv4Header {
  uint8_t header_len;  // bytes
  uint8_t tos;
  uint16_t total_len;
  uint16_t id;
  bool dont_fragment;
  uint8_t ttl;
  uint8_t protocol;
  Ipv4 src, dst;
};

struct Ipv6Header {
  uint8_t traffic_class;
  uint32_t flow_label;
  uint16_t payload_len;
  uint8_t next_header;
  uint8_t hop_limit;
  Ipv6 src, dst;
};

// NDP's neighbour solicitation (135) and advertisement (136), RFC 4861 4.3 and 4.4.
struct NdpMessage {
  uint8_t type = 0;
  bool router = false, solicited = false, override_flag = false;  // NA flags
  Ipv6 target{};
  bool has_lladdr = false;  // the source (NS) or target (NA) link-layer address option
  Mac lladdr{};
};
inline constexpr uint8_t kNdpSolicit = 135;
inline constexpr uint8_t kNdpAdvert = 136;
inline constexpr uint8_t kIcmpv6EchoRequest = 128;
inline constexpr uint8_t kIcmpv6EchoReply = 129;

struct UdpHeader {
  uint16_t src_port, dst_port;
  uint16_t length;
  uint16_t checksum;
};

struct ArpPacket {
  uint16_t op;  // 1 request, 2 reply
  Mac sender_mac;
  Ipv4 sender_ip;
  Mac target_mac;
  Ipv4 target_ip;
};

// Internet checksum (RFC 1071) of `data`, starting from the partial sum `initial`.
uint32_t ChecksumPartial(std::span<const uint8_t> data, uint32_t initial = 0);
uint16_t ChecksumFold(uint32_t sum);
inline uint16_t Checksum(std::span<const uint8_t> data) { return ChecksumFold(ChecksumPartial(data)); }
// The UDP checksum over the IPv4 pseudo-header and `udp` (header + payload).
uint16_t UdpChecksum(Ipv4 src, Ipv4 dst, std::span<const uint8_t> udp);

// Parsers: each returns true and fills `out`, or false with the reason in `*drop`.
// `*payload` is what follows the header (for IPv4, bounded by total length).
bool ParseEthernet(std::span<const uint8_t> frame, EthHeader* out, std::span<const uint8_t>* payload,
                   Drop* drop);
// `verify_checksum` false: the NIC has verified it (RX checksum offload said good).
bool ParseIpv4(std::span<const uint8_t> packet, Ipv4Header* out, std::span<const uint8_t>* payload,
               Drop* drop, bool verify_checksum = true);
bool ParseUdp(const Ipv4Header& ip, std::span<const uint8_t> segment, UdpHeader* out,
              std::span<const uint8_t>* payload, Drop* drop, bool verify_checksum = true);
bool ParseArp(std::span<const uint8_t> body, ArpPacket* out, Drop* drop);
// IPv6's fixed header; `*payload` bounded by its payload length. An extension header is a
// drop (kIpv6Extension), as is a hop limit of 0.
bool ParseIpv6(std::span<const uint8_t> packet, Ipv6Header* out, std::span<const uint8_t>* payload,
               Drop* drop);
// The checksum over IPv6's pseudo-header (RFC 8200 8.1) and `l4`, as UDP and ICMPv6 carry
// it (for UDP a computed 0 is sent as 0xffff).
uint16_t Ipv6Checksum(const Ipv6& src, const Ipv6& dst, uint8_t next_header, std::span<const uint8_t> l4);
// UDP over IPv6: the checksum is mandatory (0 is a drop, RFC 8200 8.1). `verify_checksum`
// false: the NIC has verified it (or, virtio, the field holds a partial sum only).
bool ParseUdp6(const Ipv6Header& ip, std::span<const uint8_t> segment, UdpHeader* out,
               std::span<const uint8_t>* payload, Drop* drop, bool verify_checksum = true);
// An ICMPv6 message after its IPv6 header: checksum verified; *type and *code set.
bool ParseIcmpv6(const Ipv6Header& ip, std::span<const uint8_t> msg, uint8_t* type, uint8_t* code,
                 Drop* drop);
// A neighbour solicitation or advertisement (ParseIcmpv6 already passed): hop limit 255,
// code 0, a target that is not multicast, options well-formed.
bool ParseNdp(const Ipv6Header& ip, std::span<const uint8_t> msg, NdpMessage* out, Drop* drop);

// Writers: each writes its header at the front of `out` (which must have room) and
// returns the bytes written.
// Who completes the IPv4 and UDP checksums: we, or the NIC (TX checksum offload, where the
// IPv4 field stays 0 and the UDP field holds the pseudo-header sum, as DPDK expects).
enum class TxChecksum : uint8_t { kSoftware, kOffload };
size_t WriteEthernet(std::span<uint8_t> out, const Mac& dst, const Mac& src, uint16_t ether_type);
// `payload_len` is what follows the IPv4 header; the header checksum is filled in.
size_t WriteIpv4(std::span<uint8_t> out, Ipv4 src, Ipv4 dst, uint8_t protocol, uint16_t payload_len,
                 uint16_t id, uint8_t ttl = 64, TxChecksum csum = TxChecksum::kSoftware);
// Writes the UDP header before `payload_len` bytes already in place after it, and
// fills the checksum (over pseudo-header, header and payload).
size_t WriteUdp(std::span<uint8_t> out, Ipv4 src, Ipv4 dst, uint16_t src_port, uint16_t dst_port,
                uint16_t payload_len, TxChecksum csum = TxChecksum::kSoftware);
size_t WriteArp(std::span<uint8_t> out, const ArpPacket& arp);
size_t WriteIpv6(std::span<uint8_t> out, const Ipv6& src, const Ipv6& dst, uint8_t next_header,
                 uint16_t payload_len, uint8_t hop_limit = 64);
// The UDP header before `payload_len` bytes already after it, checksum filled.
size_t WriteUdp6(std::span<uint8_t> out, const Ipv6& src, const Ipv6& dst, uint16_t src_port,
                 uint16_t dst_port, uint16_t payload_len);
// A neighbour solicitation or advertisement (ICMPv6 message, kNdpLen bytes) with our
// link-layer address option, checksum filled for `src` -> `dst`. The IPv6 header around
// it must say hop limit 255.
size_t WriteNdp(std::span<uint8_t> out, const Ipv6& src, const Ipv6& dst, const NdpMessage& m);

}  // namespace qbridge::dp::net
