// A QUIC check run over any DpdkRingPair (ring or memif ports): a verified handshake
// through a Retry, then 1 MiB echoed on one stream, all through our Ethernet/ARP/IPv4/UDP
// stack. For gtest binaries.
#pragma once

#include <gtest/gtest.h>

#include "tests/support/dpdk_ring_pair.h"
#include "tests/support/quic_test_util.h"

namespace qbridge::testing {

// A verified handshake (through a Retry) and a 1 MiB echo between the pair's two ports.
inline void QuicEchoThrough(DpdkRingPair& pair) {
  // (A memif port drops its gratuitous ARP while its peer is not connected yet.)
  const uint64_t full_before = pair.a->stats().tx_dropped_ring_full.Get() + pair.b->stats().tx_dropped_ring_full.Get();
  TestTls tls("198.18.0.2");  // verified against the IP SAN
  ASSERT_TRUE(tls.ok());
  quic::EndpointConfig ec;
  ec.retry = quic::RetryMode::kAlways;
  auto ep = quic::ServerEndpoint::Create(*tls.server, ec);
  ASSERT_TRUE(ep.ok());
  RecordingEvents server_events, client_events;
  server_events.echo = true;
  (*ep)->set_on_accept([&](quic::Connection& c) {
    server_events.conn = &c;
    return &server_events;
  });
  auto client = quic::Connection::Connect(*tls.client, quic::TransportConfig{}, pair.ClientPath(),
                                          &client_events, MonotonicNs());
  ASSERT_TRUE(client.ok());
  client_events.conn = client->get();
  quic::Connection& c = **client;
  quic::ServerEndpoint& s = **ep;
  pair.client = &c;
  pair.server = &s;
  auto run = [&](const std::function<bool()>& done, uint64_t limit) { return pair.RunUntil(done, limit); };
  ASSERT_TRUE(run([&] { return client_events.confirmed; }, 10 * quic::kSecond));
  EXPECT_EQ(client_events.alpn, "mqtt");
  auto sid = c.OpenStream();
  ASSERT_TRUE(sid.ok());
  std::vector<uint8_t> payload(1 << 20);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(i * 13 + (i >> 10));
  ASSERT_TRUE(c.Send(*sid, quic::Buffer::Copy(payload), true).ok());
  ASSERT_TRUE(run([&] { return client_events.fin[*sid]; }, 30 * quic::kSecond))
      << "echoed " << client_events.data[*sid].size();
  EXPECT_TRUE(client_events.data[*sid] == payload);
  EXPECT_EQ(s.stats().retry_sent, 1u);
  EXPECT_GT(pair.b->stats().rx_udp.Get(), 700u);
  EXPECT_EQ(pair.a->stats().tx_dropped_ring_full.Get() + pair.b->stats().tx_dropped_ring_full.Get(), full_before);
  pair.client = nullptr;
  pair.server = nullptr;
}

}  // namespace qbridge::testing
