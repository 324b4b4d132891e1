#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dataplane/net/arp_cache.h"
#include "dataplane/net/headers.h"
#include "tests/support/bytes.h"

namespace qbridge::dp::net {
namespace {

using qbridge::testing::Hex;

constexpr Mac kOurMac = {0x02, 0, 0, 0, 0, 0x01};
constexpr Mac kPeerMac = {0x02, 0, 0, 0, 0, 0x02};
constexpr Ipv4 kOurIp = MakeIpv4(198, 18, 0, 2);
constexpr Ipv4 kPeerIp = MakeIpv4(198, 18, 0, 1);

// RFC 1071's example sum, and a slow reference to hold the fast one against.
uint16_t ReferenceChecksum(std::span<const uint8_t> d, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < d.size(); i += 2) sum += uint32_t(d[i] << 8 | d[i + 1]);
  if (d.size() % 2) sum += uint32_t(d.back() << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

TEST(Checksum, Rfc1071Example) {
  const auto d = Hex("00 01 f2 03 f4 f5 f6 f7");
  EXPECT_EQ(Checksum(d), uint16_t(~0xddf2));
}

TEST(Checksum, MatchesReferenceOnRandomData) {
  std::mt19937 rng(5);
  for (int i = 0; i < 500; ++i) {
    std::vector<uint8_t> d(rng() % 1600);
    for (auto& b : d) b = uint8_t(rng());
    ASSERT_EQ(Checksum(d), ReferenceChecksum(d)) << d.size();
  }
}

// Every length and alignment across the fast loop's 32- and 8-byte steps, data that makes
// every 64-bit lane wrap (all 0xff), and a running sum carried in.
TEST(Checksum, MatchesReferenceAtEveryLengthAlignmentAndCarry) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(600);
  for (int fill = 0; fill < 3; ++fill) {
    for (auto& b : buf) b = fill == 0 ? 0xff : fill == 1 ? 0x00 : uint8_t(rng());
    for (size_t off = 0; off < 8; ++off) {
      for (size_t len = 0; off + len <= 300; ++len) {
        const std::span<const uint8_t> d(buf.data() + off, len);
        ASSERT_EQ(Checksum(d), ReferenceChecksum(d)) << "fill " << fill << " off " << off << " len " << len;
        const uint32_t initial = 0x1fffe;
        ASSERT_EQ(ChecksumFold(ChecksumPartial(d, initial)), ReferenceChecksum(d, initial)) << len;
      }
    }
  }
}

// A UDP datagram in an Ethernet frame, built with our writers.
std::vector<uint8_t> UdpFrame(std::string_view payload, uint16_t vlan = 0) {
  const size_t l2 = kEthHeaderLen + (vlan ? 4 : 0);
  std::vector<uint8_t> f(l2 + kIpv4MinHeaderLen + kUdpHeaderLen + payload.size());
  if (vlan) {
    WriteEthernet(f, kOurMac, kPeerMac, kEtherTypeVlan);
    f[14] = uint8_t(vlan >> 8);
    f[15] = uint8_t(vlan);
    f[16] = 0x08;
    f[17] = 0x00;
  } else {
    WriteEthernet(f, kOurMac, kPeerMac, kEtherTypeIpv4);
  }
  const size_t l3 = l2, l4 = l3 + kIpv4MinHeaderLen;
  std::memcpy(f.data() + l4 + kUdpHeaderLen, payload.data(), payload.size());
  WriteUdp(std::span(f).subspan(l4), kPeerIp, kOurIp, 50000, 14567, uint16_t(payload.size()));
  WriteIpv4(std::span(f).subspan(l3), kPeerIp, kOurIp, kIpProtoUdp,
            uint16_t(kUdpHeaderLen + payload.size()), 7);
  return f;
}

struct Parsed {
  Drop drop = Drop::kCount;
  EthHeader eth{};
  Ipv4Header ip{};
  UdpHeader udp{};
  std::span<const uint8_t> payload;
};

Parsed ParseAll(std::span<const uint8_t> frame) {
  Parsed p;
  std::span<const uint8_t> l3, l4;
  if (!ParseEthernet(frame, &p.eth, &l3, &p.drop)) return p;
  if (!ParseIpv4(l3, &p.ip, &l4, &p.drop)) return p;
  if (p.ip.protocol != kIpProtoUdp) {  // as the dataplane classifies: only UDP goes on
    p.drop = Drop::kUnknownProtocol;
    return p;
  }
  if (!ParseUdp(p.ip, l4, &p.udp, &p.payload, &p.drop)) return p;
  return p;
}

TEST(Ipv4, ParsesAKnownHeader) {
  // A textbook header (checksum b861).
  const auto h = Hex("45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7");
  std::vector<uint8_t> pkt = h;
  pkt.resize(0x73, 0);
  Ipv4Header ip;
  std::span<const uint8_t> payload;
  Drop drop;
  ASSERT_TRUE(ParseIpv4(pkt, &ip, &payload, &drop)) << DropName(drop);
  EXPECT_EQ(ip.src, MakeIpv4(192, 168, 0, 1));
  EXPECT_EQ(ip.dst, MakeIpv4(192, 168, 0, 199));
  EXPECT_EQ(ip.protocol, kIpProtoUdp);
  EXPECT_TRUE(ip.dont_fragment);
  EXPECT_EQ(ip.ttl, 64);
  EXPECT_EQ(payload.size(), 0x73u - 20);
}

TEST(Udp, RoundTripThroughWritersAndParsers) {
  const auto f = UdpFrame("quic datagram");
  const Parsed p = ParseAll(f);
  ASSERT_EQ(p.drop, Drop::kCount) << DropName(p.drop);
  EXPECT_EQ(p.eth.dst, kOurMac);
  EXPECT_EQ(p.eth.src, kPeerMac);
  EXPECT_EQ(p.ip.src, kPeerIp);
  EXPECT_EQ(p.ip.dst, kOurIp);
  EXPECT_EQ(p.udp.src_port, 50000);
  EXPECT_EQ(p.udp.dst_port, 14567);
  EXPECT_NE(p.udp.checksum, 0);
  EXPECT_EQ(std::string(p.payload.begin(), p.payload.end()), "quic datagram");
  EXPECT_EQ(p.payload.data(), f.data() + 42);  // a view, not a copy
}

// With TX checksum offload the writers leave what the NIC completes: IPv4's field 0, UDP's
// the pseudo-header sum. Completing both as a NIC does gives the software checksums.
TEST(Udp, OffloadWritersLeaveWhatTheNicCompletes) {
  const std::string_view payload = "offloaded datagram!";
  const auto soft = UdpFrame(payload);
  std::vector<uint8_t> f(soft.size());
  WriteEthernet(f, kOurMac, kPeerMac, kEtherTypeIpv4);
  const size_t l3 = kEthHeaderLen, l4 = l3 + kIpv4MinHeaderLen;
  std::memcpy(f.data() + l4 + kUdpHeaderLen, payload.data(), payload.size());
  WriteUdp(std::span(f).subspan(l4), kPeerIp, kOurIp, 50000, 14567, uint16_t(payload.size()),
           TxChecksum::kOffload);
  WriteIpv4(std::span(f).subspan(l3), kPeerIp, kOurIp, kIpProtoUdp,
            uint16_t(kUdpHeaderLen + payload.size()), 7, 64, TxChecksum::kOffload);
  EXPECT_EQ(f[l3 + 10], 0);
  EXPECT_EQ(f[l3 + 11], 0);
  // The NIC: IPv4 header checksum, then the UDP sum over the segment seeded by the field.
  const uint16_t ip = Checksum(std::span<const uint8_t>(f).subspan(l3, kIpv4MinHeaderLen));
  f[l3 + 10] = uint8_t(ip >> 8), f[l3 + 11] = uint8_t(ip);
  const uint16_t udp = Checksum(std::span<const uint8_t>(f).subspan(l4));
  f[l4 + 6] = uint8_t(udp >> 8), f[l4 + 7] = uint8_t(udp);
  EXPECT_EQ(f, soft);
  // A parser told the NIC checked them skips the check (a bad field passes)...
  f[l4 + 6] ^= 0xff;
  f[l3 + 10] ^= 0xff;
  std::span<const uint8_t> l3s(f), l4s, pl;
  l3s = l3s.subspan(l3);
  Ipv4Header iph;
  UdpHeader udph;
  Drop drop;
  EXPECT_TRUE(ParseIpv4(l3s, &iph, &l4s, &drop, /*verify_checksum=*/false));
  EXPECT_TRUE(ParseUdp(iph, l4s, &udph, &pl, &drop, /*verify_checksum=*/false));
  // ...and one that checks does not.
  EXPECT_FALSE(ParseIpv4(l3s, &iph, &l4s, &drop));
  EXPECT_EQ(drop, Drop::kBadIpChecksum);
  EXPECT_FALSE(ParseUdp(iph, l4s, &udph, &pl, &drop));
  EXPECT_EQ(drop, Drop::kBadUdpChecksum);
}

TEST(Udp, VlanTaggedFrame) {
  const auto f = UdpFrame("x", 42);
  const Parsed p = ParseAll(f);
  ASSERT_EQ(p.drop, Drop::kCount) << DropName(p.drop);
  EXPECT_EQ(p.eth.vlan, 42);
  EXPECT_EQ(std::string(p.payload.begin(), p.payload.end()), "x");
}

TEST(Udp, EthernetPaddingIsIgnored) {
  auto f = UdpFrame("ab");  // 44 bytes: a real NIC pads to 60
  f.resize(60, 0xEE);
  const Parsed p = ParseAll(f);
  ASSERT_EQ(p.drop, Drop::kCount) << DropName(p.drop);
  EXPECT_EQ(p.payload.size(), 2u);
}

TEST(Drops, EveryMalformedCaseHasItsReason) {
  auto drop_of = [](std::vector<uint8_t> f) { return ParseAll(f).drop; };
  const auto good = UdpFrame("payload!");
  {
    auto f = good;
    f[42] ^= 1;  // payload byte: UDP checksum
    EXPECT_EQ(drop_of(f), Drop::kBadUdpChecksum);
  }
  {
    auto f = good;
    f[14 + 8] = 63;  // TTL: IP checksum no longer matches
    EXPECT_EQ(drop_of(f), Drop::kBadIpChecksum);
  }
  {
    auto f = good;  // UDP checksum 0 means "none" and is accepted
    f[40] = f[41] = 0;
    EXPECT_EQ(drop_of(f), Drop::kCount);
  }
  auto with_ip = [&](auto edit) {
    auto f = good;
    edit(f.data() + 14);
    f[24] = f[25] = 0;
    const uint16_t c = Checksum(std::span<const uint8_t>(f.data() + 14, 20));
    f[24] = uint8_t(c >> 8);
    f[25] = uint8_t(c);
    return drop_of(f);
  };
  EXPECT_EQ(with_ip([](uint8_t* ip) { ip[6] |= 0x20; }), Drop::kIpFragment);   // MF
  EXPECT_EQ(with_ip([](uint8_t* ip) { ip[7] = 1; }), Drop::kIpFragment);       // offset
  EXPECT_EQ(with_ip([](uint8_t* ip) { ip[8] = 0; }), Drop::kTtlExpired);
  EXPECT_EQ(with_ip([](uint8_t* ip) { ip[9] = 6; }), Drop::kUnknownProtocol);  // TCP
  EXPECT_EQ(with_ip([](uint8_t* ip) { ip[3] = 200; }), Drop::kBadIpHeader);  // past the frame
  EXPECT_EQ(with_ip([](uint8_t* ip) { ip[3] = 10; }), Drop::kBadIpHeader);   // shorter than IHL
  EXPECT_EQ(drop_of([&] { auto f = good; f[14] = 0x44; return f; }()), Drop::kBadIpHeader);  // IHL 4
  EXPECT_EQ(drop_of([&] { auto f = good; f[14] = 0x65; return f; }()), Drop::kBadIpHeader);  // v6
  {
    auto f = good;  // UDP length beyond the IP payload
    f[38] = 0x01;
    EXPECT_EQ(drop_of(f), Drop::kBadUdpLength);
    f[38] = 0;
    f[39] = 4;  // shorter than its own header
    EXPECT_EQ(drop_of(f), Drop::kBadUdpLength);
  }
  EXPECT_EQ(drop_of(std::vector<uint8_t>(good.begin(), good.begin() + 13)), Drop::kRunt);
  EXPECT_EQ(drop_of(std::vector<uint8_t>(good.begin(), good.begin() + 30)), Drop::kRunt);
}

TEST(Arp, RoundTripAndValidation) {
  ArpPacket req{1, kPeerMac, kPeerIp, Mac{}, kOurIp};
  std::vector<uint8_t> body(kArpLen);
  ASSERT_EQ(WriteArp(body, req), kArpLen);
  ArpPacket back;
  Drop drop;
  ASSERT_TRUE(ParseArp(body, &back, &drop));
  EXPECT_EQ(back.op, 1);
  EXPECT_EQ(back.sender_mac, kPeerMac);
  EXPECT_EQ(back.sender_ip, kPeerIp);
  EXPECT_EQ(back.target_ip, kOurIp);
  auto bad = body;
  bad[1] = 6;  // hardware type 6 (IEEE 802)
  EXPECT_FALSE(ParseArp(bad, &back, &drop));
  EXPECT_EQ(drop, Drop::kBadArp);
  bad = body;
  bad[7] = 3;  // RARP request
  EXPECT_FALSE(ParseArp(bad, &back, &drop));
  EXPECT_FALSE(ParseArp(std::span(body).first(20), &back, &drop));
  EXPECT_EQ(drop, Drop::kRunt);
}

// --- ARP cache -------------------------------------------------------------------------------

constexpr uint64_t kS = 1'000'000'000;

TEST(ArpCache, QueuesUntilTheAnswerThenReleasesInOrder) {
  ArpCache<int, 4> cache;
  Mac mac;
  bool ask;
  int a = 1, b = 2;
  EXPECT_EQ(cache.Resolve(kPeerIp, 0, a, &mac, &ask), (ArpCache<int, 4>::Result::kQueued));
  EXPECT_TRUE(ask);
  EXPECT_EQ(cache.Resolve(kPeerIp, 1, b, &mac, &ask), (ArpCache<int, 4>::Result::kQueued));
  EXPECT_FALSE(ask);  // one request in flight is enough
  std::vector<std::pair<int, Mac>> released;
  cache.Learn(kPeerIp, kPeerMac, 2, /*create=*/false,
              [&](int&& p, const Mac& m) { released.emplace_back(p, m); });
  ASSERT_EQ(released.size(), 2u);
  EXPECT_EQ(released[0].first, 1);
  EXPECT_EQ(released[1].first, 2);
  EXPECT_EQ(released[0].second, kPeerMac);
  int c = 3;
  EXPECT_EQ(cache.Resolve(kPeerIp, 3, c, &mac, &ask), (ArpCache<int, 4>::Result::kResolved));
  EXPECT_EQ(mac, kPeerMac);
  EXPECT_FALSE(ask);
}

// Asking without a packet: the first question sends a request, later ones wait for the
// answer (or the retry timer); after the answer the hop is ready.
TEST(ArpCache, ReadyAsksOnceThenWaitsForTheAnswer) {
  ArpCache<int, 4> cache;
  bool ask;
  EXPECT_FALSE(cache.Ready(kPeerIp, 0, &ask));
  EXPECT_TRUE(ask);
  EXPECT_FALSE(cache.Ready(kPeerIp, 1, &ask));
  EXPECT_FALSE(ask);
  std::vector<std::string> requests;
  cache.Expire(ArpConfig{}.retry_ns, [&](Ipv4) { requests.push_back("again"); }, [](int&&) {});
  EXPECT_EQ(requests.size(), 1u);  // unanswered: retried like a queued packet's
  cache.Learn(kPeerIp, kPeerMac, 2, /*create=*/false, [](int&&, const Mac&) {});
  EXPECT_TRUE(cache.Ready(kPeerIp, 3, &ask));
  EXPECT_FALSE(ask);
}

TEST(ArpCache, BoundedQueueAndTable) {
  ArpConfig cfg;
  cfg.max_entries = 2;
  ArpCache<int, 2> cache(cfg);
  Mac mac;
  bool ask;
  int p = 0;
  using R = ArpCache<int, 2>::Result;
  EXPECT_EQ(cache.Resolve(kPeerIp, 0, p, &mac, &ask), R::kQueued);
  EXPECT_EQ(cache.Resolve(kPeerIp, 0, p, &mac, &ask), R::kQueued);
  EXPECT_EQ(cache.Resolve(kPeerIp, 0, p, &mac, &ask), R::kDropped);  // queue full
  EXPECT_EQ(cache.Resolve(kPeerIp + 1, 0, p, &mac, &ask), R::kQueued);
  EXPECT_EQ(cache.Resolve(kPeerIp + 2, 0, p, &mac, &ask), R::kDropped);  // table full
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ArpCache, TotalQueuedIsBoundedAcrossNeighbours) {
  // Spoofed sources each make an entry; together they may hold only so many packets,
  // or they would drain the mbuf pool the RX queue refills from.
  ArpConfig cfg;
  cfg.max_queued_total = 10;
  ArpCache<int, 4> cache(cfg);
  Mac mac;
  bool ask;
  int queued = 0, dropped = 0;
  for (int i = 0; i < 20; ++i) {
    int p = i;
    const auto r = cache.Resolve(kPeerIp + Ipv4(i), 0, p, &mac, &ask);
    (r == ArpCache<int, 4>::Result::kQueued ? queued : dropped)++;
  }
  EXPECT_EQ(queued, 10);
  EXPECT_EQ(dropped, 10);
  EXPECT_EQ(cache.queued(), 10u);
  cache.Learn(kPeerIp, kPeerMac, 1, false, [](int&&, const Mac&) {});
  EXPECT_EQ(cache.queued(), 9u);
  std::vector<int> freed;
  cache.Clear([&](int&& p) { freed.push_back(p); });
  EXPECT_EQ(freed.size(), 9u);
  EXPECT_EQ(cache.queued(), 0u);
}

TEST(ArpCache, RetriesThenGivesUpAndHandsPacketsBack) {
  ArpCache<int, 4> cache;  // 1 s between requests, 3 requests
  Mac mac;
  bool ask;
  int p = 7;
  cache.Resolve(kPeerIp, 0, p, &mac, &ask);
  int requests = 0;
  std::vector<int> dropped;
  auto req = [&](Ipv4 ip) {
    EXPECT_EQ(ip, kPeerIp);
    ++requests;
  };
  auto drop = [&](int&& x) { dropped.push_back(x); };
  cache.Expire(kS / 2, req, drop);
  EXPECT_EQ(requests, 0);
  cache.Expire(kS, req, drop);
  cache.Expire(2 * kS, req, drop);
  EXPECT_EQ(requests, 2);  // requests 2 and 3
  EXPECT_TRUE(dropped.empty());
  cache.Expire(3 * kS, req, drop);
  EXPECT_EQ(dropped, std::vector<int>{7});
  EXPECT_FALSE(cache.Has(kPeerIp));
}

TEST(ArpCache, MergeRuleAndAgeing) {
  ArpCache<int, 4> cache;
  cache.Learn(kPeerIp, kPeerMac, 0, /*create=*/false, [](int&&, const Mac&) {});
  EXPECT_FALSE(cache.Has(kPeerIp));  // not for us and not known: ignored (RFC 826)
  cache.Learn(kPeerIp, kPeerMac, 0, /*create=*/true, [](int&&, const Mac&) {});
  EXPECT_TRUE(cache.Has(kPeerIp));
  Mac mac;
  bool ask;
  int p = 0;
  // Past reachable time the MAC is still used, and confirmed with a request.
  EXPECT_EQ(cache.Resolve(kPeerIp, 31 * kS, p, &mac, &ask), (ArpCache<int, 4>::Result::kResolved));
  EXPECT_TRUE(ask);
  // No answer: after the retries the entry goes.
  int requests = 0;
  for (uint64_t t = 32; t <= 40; ++t)
    cache.Expire(t * kS, [&](Ipv4) { ++requests; }, [](int&&) {});
  EXPECT_EQ(requests, 2);
  EXPECT_FALSE(cache.Has(kPeerIp));
}

TEST(Routes, LongestPrefixWins) {
  RouteTable routes;
  routes.Add(MakeIpv4(0, 0, 0, 0), 0, MakeIpv4(198, 18, 0, 254));       // default gateway
  routes.Add(MakeIpv4(198, 18, 0, 0), 24, 0);                           // connected
  routes.Add(MakeIpv4(198, 19, 7, 0), 24, MakeIpv4(198, 18, 0, 253));   // via another router
  Ipv4 hop;
  ASSERT_TRUE(routes.NextHop(MakeIpv4(198, 18, 0, 9), &hop));
  EXPECT_EQ(hop, MakeIpv4(198, 18, 0, 9));
  ASSERT_TRUE(routes.NextHop(MakeIpv4(198, 19, 7, 1), &hop));
  EXPECT_EQ(hop, MakeIpv4(198, 18, 0, 253));
  ASSERT_TRUE(routes.NextHop(MakeIpv4(203, 0, 113, 5), &hop));
  EXPECT_EQ(hop, MakeIpv4(198, 18, 0, 254));
  RouteTable none;
  none.Add(MakeIpv4(198, 18, 0, 0), 24, 0);
  EXPECT_FALSE(none.NextHop(MakeIpv4(198, 19, 0, 1), &hop));
}


// --- IPv6 (addresses from the benchmarking prefix 2001:2::/48, RFC 5180) ---

constexpr Ipv6 kOur6 = {0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02};
constexpr Ipv6 kPeer6 = {0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};

// The pseudo-header sum the slow way, for the reference checksum.
uint32_t Pseudo6(const Ipv6& src, const Ipv6& dst, uint8_t next, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i < 16; i += 2) sum += uint32_t(src[i] << 8 | src[i + 1]) + uint32_t(dst[i] << 8 | dst[i + 1]);
  return sum + uint32_t(len >> 16) + uint32_t(len & 0xffff) + next;
}

TEST(Ipv6, MulticastAndLinkLocalAddresses) {
  EXPECT_EQ(SolicitedNode(kOur6), (Ipv6{0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0x02}));
  EXPECT_EQ(MulticastMac(SolicitedNode(kOur6)), (Mac{0x33, 0x33, 0xff, 0, 0, 0x02}));
  // 02:00:00:00:00:01 -> fe80::ff:fe00:1 (the universal/local bit flipped).
  EXPECT_EQ(LinkLocal(kOurMac), (Ipv6{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0, 0x01}));
}

TEST(Ipv6, UdpRoundTripWithAMandatoryChecksum) {
  const std::string payload = "quic datagram over ipv6";
  std::vector<uint8_t> f(kEthHeaderLen + kIpv6HeaderLen + kUdpHeaderLen + payload.size());
  std::memcpy(f.data() + kEthHeaderLen + kIpv6HeaderLen + kUdpHeaderLen, payload.data(), payload.size());
  const auto l3w = std::span(f).subspan(kEthHeaderLen);
  WriteUdp6(l3w.subspan(kIpv6HeaderLen), kPeer6, kOur6, 50000, 14567, uint16_t(payload.size()));
  WriteIpv6(l3w, kPeer6, kOur6, kIpProtoUdp, uint16_t(kUdpHeaderLen + payload.size()));
  WriteEthernet(f, kOurMac, kPeerMac, kEtherTypeIpv6);
  // The checksum agrees with the slow reference over pseudo-header and segment.
  const auto seg = std::span<const uint8_t>(f).subspan(kEthHeaderLen + kIpv6HeaderLen);
  EXPECT_EQ(ReferenceChecksum(seg, Pseudo6(kPeer6, kOur6, kIpProtoUdp, seg.size())), 0);

  EthHeader eth;
  Ipv6Header ip;
  UdpHeader udp;
  std::span<const uint8_t> l3, l4, data;
  Drop drop;
  ASSERT_TRUE(ParseEthernet(f, &eth, &l3, &drop));
  EXPECT_EQ(eth.ether_type, kEtherTypeIpv6);
  ASSERT_TRUE(ParseIpv6(l3, &ip, &l4, &drop));
  EXPECT_EQ(ip.src, kPeer6);
  EXPECT_EQ(ip.dst, kOur6);
  EXPECT_EQ(ip.next_header, kIpProtoUdp);
  EXPECT_EQ(ip.hop_limit, 64);
  ASSERT_TRUE(ParseUdp6(ip, l4, &udp, &data, &drop));
  EXPECT_EQ(udp.src_port, 50000);
  EXPECT_EQ(udp.dst_port, 14567);
  EXPECT_EQ(std::string(data.begin(), data.end()), payload);

  std::vector<uint8_t> bad = f;
  bad.back() ^= 1;
  ASSERT_TRUE(ParseEthernet(bad, &eth, &l3, &drop) && ParseIpv6(l3, &ip, &l4, &drop));
  EXPECT_FALSE(ParseUdp6(ip, l4, &udp, &data, &drop));
  EXPECT_EQ(drop, Drop::kBadUdpChecksum);
  bad = f;
  bad[kEthHeaderLen + kIpv6HeaderLen + 6] = bad[kEthHeaderLen + kIpv6HeaderLen + 7] = 0;  // "no checksum"
  ASSERT_TRUE(ParseEthernet(bad, &eth, &l3, &drop) && ParseIpv6(l3, &ip, &l4, &drop));
  EXPECT_FALSE(ParseUdp6(ip, l4, &udp, &data, &drop));
  EXPECT_EQ(drop, Drop::kBadUdpChecksum);
}

TEST(Ipv6, HeaderDropsHaveTheirReasons) {
  std::vector<uint8_t> p(kIpv6HeaderLen + 8, 0);
  WriteIpv6(p, kPeer6, kOur6, kIpProtoUdp, 8);
  Ipv6Header ip;
  std::span<const uint8_t> l4;
  Drop drop;
  ASSERT_TRUE(ParseIpv6(p, &ip, &l4, &drop));
  EXPECT_FALSE(ParseIpv6(std::span<const uint8_t>(p).first(39), &ip, &l4, &drop));
  EXPECT_EQ(drop, Drop::kRunt);
  std::vector<uint8_t> q = p;
  q[0] = 0x45;  // IPv4 in an IPv6 frame
  EXPECT_FALSE(ParseIpv6(q, &ip, &l4, &drop));
  EXPECT_EQ(drop, Drop::kBadIpHeader);
  q = p;
  q[5] = 9;  // payload longer than the packet
  EXPECT_FALSE(ParseIpv6(q, &ip, &l4, &drop));
  EXPECT_EQ(drop, Drop::kBadIpHeader);
  q = p;
  q[6] = 44;  // a fragment header
  EXPECT_FALSE(ParseIpv6(q, &ip, &l4, &drop));
  EXPECT_EQ(drop, Drop::kIpv6Extension);
  q = p;
  q[7] = 0;
  EXPECT_FALSE(ParseIpv6(q, &ip, &l4, &drop));
  EXPECT_EQ(drop, Drop::kTtlExpired);
}

// A solicitation for our address from the peer, and our advertisement back: written,
// checksummed (against the slow reference) and parsed as RFC 4861 wants them.
TEST(Ndp, SolicitationAndAdvertisementRoundTrip) {
  const Ipv6 to = SolicitedNode(kOur6);
  std::vector<uint8_t> pkt(kIpv6HeaderLen + kNdpLen);
  NdpMessage ns;
  ns.type = kNdpSolicit;
  ns.target = kOur6;
  ns.lladdr = kPeerMac;
  WriteNdp(std::span(pkt).subspan(kIpv6HeaderLen), kPeer6, to, ns);
  WriteIpv6(pkt, kPeer6, to, kIpProtoIcmpv6, kNdpLen, 255);
  const auto msg = std::span<const uint8_t>(pkt).subspan(kIpv6HeaderLen);
  EXPECT_EQ(ReferenceChecksum(msg, Pseudo6(kPeer6, to, kIpProtoIcmpv6, msg.size())), 0);

  Ipv6Header ip;
  std::span<const uint8_t> l4;
  Drop drop;
  uint8_t type, code;
  NdpMessage got;
  ASSERT_TRUE(ParseIpv6(pkt, &ip, &l4, &drop));
  ASSERT_TRUE(ParseIcmpv6(ip, l4, &type, &code, &drop));
  EXPECT_EQ(type, kNdpSolicit);
  ASSERT_TRUE(ParseNdp(ip, l4, &got, &drop));
  EXPECT_EQ(got.target, kOur6);
  EXPECT_TRUE(got.has_lladdr);
  EXPECT_EQ(got.lladdr, kPeerMac);

  NdpMessage na;
  na.type = kNdpAdvert;
  na.solicited = na.override_flag = true;
  na.target = kOur6;
  na.lladdr = kOurMac;
  std::vector<uint8_t> reply(kIpv6HeaderLen + kNdpLen);
  WriteNdp(std::span(reply).subspan(kIpv6HeaderLen), kOur6, kPeer6, na);
  WriteIpv6(reply, kOur6, kPeer6, kIpProtoIcmpv6, kNdpLen, 255);
  ASSERT_TRUE(ParseIpv6(reply, &ip, &l4, &drop));
  ASSERT_TRUE(ParseIcmpv6(ip, l4, &type, &code, &drop));
  ASSERT_TRUE(ParseNdp(ip, l4, &got, &drop));
  EXPECT_EQ(got.type, kNdpAdvert);
  EXPECT_TRUE(got.solicited && got.override_flag && !got.router);
  EXPECT_EQ(got.lladdr, kOurMac);
  // Solicited, yet sent to a group: ignored (7.1.2).
  const Ipv6 all_nodes = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
  WriteNdp(std::span(reply).subspan(kIpv6HeaderLen), kOur6, all_nodes, na);
  WriteIpv6(reply, kOur6, all_nodes, kIpProtoIcmpv6, kNdpLen, 255);
  ASSERT_TRUE(ParseIpv6(reply, &ip, &l4, &drop));
  EXPECT_FALSE(ParseNdp(ip, l4, &got, &drop));
  EXPECT_EQ(drop, Drop::kBadNdp);

  // What RFC 4861 says to ignore: forwarded (hop limit below 255), a bad checksum, an
  // option of length 0, a multicast target.
  std::vector<uint8_t> bad = pkt;
  bad[7] = 254;
  ASSERT_TRUE(ParseIpv6(bad, &ip, &l4, &drop));
  EXPECT_FALSE(ParseNdp(ip, l4, &got, &drop));
  EXPECT_EQ(drop, Drop::kBadNdp);
  bad = pkt;
  bad.back() ^= 0x10;
  ASSERT_TRUE(ParseIpv6(bad, &ip, &l4, &drop));
  EXPECT_FALSE(ParseIcmpv6(ip, l4, &type, &code, &drop));
  EXPECT_EQ(drop, Drop::kBadIcmp);
  for (const auto& [at, value] : std::vector<std::pair<size_t, uint8_t>>{{25, 0}, {8, 0xff}}) {
    bad = pkt;
    bad[kIpv6HeaderLen + at] = value;
    ASSERT_TRUE(ParseIpv6(bad, &ip, &l4, &drop));
    EXPECT_FALSE(ParseNdp(ip, l4, &got, &drop)) << "byte " << at;
    EXPECT_EQ(drop, Drop::kBadNdp);
  }
}

TEST(NeighbourCache, KeyedByIpv6LikeArp) {
  NeighbourCache<int> cache;
  Mac mac;
  bool ask;
  int a = 7;
  EXPECT_EQ(cache.Resolve(kPeer6, 0, a, &mac, &ask), NeighbourCache<int>::Result::kQueued);
  EXPECT_TRUE(ask);
  std::vector<int> released;
  cache.Learn(kPeer6, kPeerMac, 1, /*create=*/false, [&](int&& p, const Mac&) { released.push_back(p); });
  EXPECT_EQ(released, std::vector<int>{7});
  int b = 8;
  EXPECT_EQ(cache.Resolve(kPeer6, 2, b, &mac, &ask), NeighbourCache<int>::Result::kResolved);
  EXPECT_EQ(mac, kPeerMac);
  EXPECT_FALSE(cache.Has(kOur6));
}

}  // namespace
}  // namespace qbridge::dp::net
