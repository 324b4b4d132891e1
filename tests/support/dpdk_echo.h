// A QUIC echo server hosted on a DPDK port (our Ethernet/ARP/IPv4/UDP stack under a
// ServerEndpoint), and the two clients the DPDK integration tests put through it from the
// kernel's side: ours on a kernel UDP socket, and @matrixai/quic (quiche) run by node.
// Everything is polled from the calling thread; every loop is bounded in time.
#pragma once

#include <string>
#include <vector>

#include "dataplane/dpdk/dpdk_io.h"
#include "dataplane/udp_socket.h"
#include "quic/endpoint.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/quic_udp_pair.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_certs.h"

#ifndef QBRIDGE_SOURCE_DIR
#error "QBRIDGE_SOURCE_DIR must be defined"
#endif

namespace qbridge::testing {

inline uint8_t EchoPattern(size_t i) { return uint8_t(i * 7 + (i >> 13)); }  // quic_peer.mjs's

class DpdkEchoServer {
 public:
  // Certificates from GetTestCerts() (they name "localhost"); Retry always, so a client
  // must also follow a Retry through the DPDK stack.
  explicit DpdkEchoServer(dp::DpdkIo* io) : io_(io) {
    auto tls = quic::TlsContext::Create(quic::TlsContext::Side::kServer, ServerTlsConfig());
    EXPECT_TRUE(tls.ok()) << tls.status();
    if (!tls.ok()) return;
    tls_ = std::move(*tls);
    quic::EndpointConfig ec;
    ec.retry = quic::RetryMode::kAlways;
    auto ep = quic::ServerEndpoint::Create(*tls_, ec);
    EXPECT_TRUE(ep.ok()) << ep.status();
    if (!ep.ok()) return;
    ep_ = std::move(*ep);
    events_.echo = true;
    ep_->set_on_accept([this](quic::Connection& c) {
      events_.conn = &c;
      events_.data.clear();
      return &events_;
    });
    ep_->set_on_close([this](quic::Connection&) { events_.conn = nullptr; });
  }
  bool ok() const { return ep_ != nullptr; }
  quic::ServerEndpoint& endpoint() { return *ep_; }
  const RecordingEvents& events() const { return events_; }

  void Poll(uint64_t now) {
    auto emit = [this](const quic::Path& p, std::span<const uint8_t> d, size_t seg) { io_->Send(p, d, seg); };
    io_->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) { ep_->Receive(p, d, now, emit); });
    if (ep_->Expiry() <= now) ep_->HandleExpiry(now);
    ep_->WriteAll(now, scratch_, 64, emit);
  }

 private:
  dp::DpdkIo* io_;
  std::unique_ptr<quic::TlsContext> tls_;
  std::unique_ptr<quic::ServerEndpoint> ep_;
  RecordingEvents events_;
  std::vector<uint8_t> scratch_ = std::vector<uint8_t>(64 * 1500);
};

// Our client on `sock` (a kernel socket, in whatever network namespace it was made):
// handshake with the certificate verified as "localhost", then `bytes` echoed on one stream.
inline ::testing::AssertionResult OurClientEchoes(DpdkEchoServer& server, dp::UdpSocket& sock,
                                                  const quic::Address& to, size_t bytes) {
  auto tls = quic::TlsContext::Create(quic::TlsContext::Side::kClient, ClientTlsConfig());
  if (!tls.ok()) return ::testing::AssertionFailure() << tls.status();
  RecordingEvents ev;
  auto client = quic::Connection::Connect(**tls, quic::TransportConfig{}, quic::Path{sock.local(), to}, &ev,
                                          MonotonicNs());
  if (!client.ok()) return ::testing::AssertionFailure() << client.status();
  quic::Connection& c = **client;
  ev.conn = &c;
  std::vector<uint8_t> scratch(64 * 1500);
  auto emit = [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) { sock.Send(p, d, seg); };
  auto run = [&](const std::function<bool()>& done, uint64_t limit) {
    const uint64_t end = MonotonicNs() + limit;
    while (!done() && MonotonicNs() < end) {
      const uint64_t now = MonotonicNs();
      sock.Receive([&](const quic::Path& p, std::span<const uint8_t> d) { c.Read(p, d, now); });
      server.Poll(now);
      if (c.Expiry() <= now) c.HandleExpiry(now);
      c.Write(now, scratch, 64, emit);
    }
    return done();
  };
  if (!run([&] { return ev.confirmed; }, 10 * quic::kSecond))
    return ::testing::AssertionFailure() << "no handshake (kernel socket rx " << sock.stats().rx_datagrams << ")";
  if (ev.alpn != "mqtt") return ::testing::AssertionFailure() << "ALPN '" << ev.alpn << "'";
  auto sid = c.OpenStream();
  if (!sid.ok()) return ::testing::AssertionFailure() << sid.status();
  std::vector<uint8_t> payload(bytes);
  for (size_t i = 0; i < bytes; ++i) payload[i] = EchoPattern(i);
  if (!c.Send(*sid, quic::Buffer::Copy(payload), true).ok()) return ::testing::AssertionFailure() << "send refused";
  if (!run([&] { return ev.fin[*sid]; }, 60 * quic::kSecond))
    return ::testing::AssertionFailure() << "echoed " << ev.data[*sid].size() << " of " << bytes;
  if (ev.data[*sid] != payload) return ::testing::AssertionFailure() << "the echo differs";
  c.Close(0);
  c.Write(MonotonicNs(), scratch, 1, emit);
  return ::testing::AssertionSuccess();
}

// @matrixai/quic's client (tests/interop/quic_peer.mjs) run as `prefix... node ...` (e.g.
// inside a network namespace), while the server is polled here.
inline ::testing::AssertionResult NodeClientEchoes(DpdkEchoServer& server, const std::vector<std::string>& prefix,
                                                   const std::string& host, uint16_t port, size_t bytes,
                                                   const std::string& log) {
  const std::string interop = std::string(QBRIDGE_SOURCE_DIR) + "/tests/interop";
  std::vector<std::string> argv = prefix;
  for (const std::string& a : {std::string("node"), interop + "/quic_peer.mjs", std::string("client"),
                               std::string("--host"), host, std::string("--port"), std::to_string(port),
                               std::string("--ca"), GetTestCerts().ca, std::string("--server-name"),
                               std::string("localhost"), std::string("--bytes"), std::to_string(bytes),
                               std::string("--seconds"), std::string("60")}) {
    argv.push_back(a);
  }
  Subprocess node;
  if (!node.Start(argv, log)) return ::testing::AssertionFailure() << "cannot start node";
  int status = -1;
  const uint64_t end = MonotonicNs() + 70 * quic::kSecond;
  while ((status = node.TryWait()) < 0 && MonotonicNs() < end) server.Poll(MonotonicNs());
  if (status < 0) return ::testing::AssertionFailure() << "node did not finish";
  std::string verdict;
  for (std::string line; (line = node.ReadLine(2000)) != "";) {
    if (line.rfind("{", 0) == 0) verdict = line;
  }
  const std::string want = "{\"ok\":true,\"sent\":" + std::to_string(bytes) + ",\"received\":" +
                           std::to_string(bytes) + "}";
  if (status != 0 || verdict != want)
    return ::testing::AssertionFailure() << "node exit " << status << ": " << verdict << " (log: " << log << ")";
  if (server.events().alpn != "mqtt") return ::testing::AssertionFailure() << "ALPN '" << server.events().alpn << "'";
  return ::testing::AssertionSuccess();
}

}  // namespace qbridge::testing
