// Interop with an independent QUIC stack: @matrixai/quic (Cloudflare quiche) from npm.
// Our client against its server and its client against our server, over loopback UDP,
// ALPN "mqtt", certificates verified on the client side, a bidirectional stream echoing
// 10 MiB byte for byte.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "tests/support/quic_test_util.h"
#include "tests/support/quic_udp_pair.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_certs.h"

#ifndef QBRIDGE_SOURCE_DIR
#error "QBRIDGE_SOURCE_DIR must be defined"
#endif

namespace qbridge::quic {
namespace {

using qbridge::testing::GetTestCerts;
using qbridge::testing::MonotonicNs;
using qbridge::testing::Subprocess;

constexpr size_t kBytes = 10 << 20;
const std::string kInterop = std::string(QBRIDGE_SOURCE_DIR) + "/tests/interop";

uint8_t Pattern(size_t i) { return uint8_t(i * 7 + (i >> 13)); }

using Events = qbridge::testing::RecordingEvents;

class QuicInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/node", X_OK) != 0 && ::access("/usr/local/bin/node", X_OK) != 0)
      GTEST_SKIP() << "node is not installed (tools/setup.sh installs it)";
    ASSERT_TRUE(std::filesystem::exists(kInterop + "/node_modules/@matrixai/quic"))
        << "run tools/test.sh (it installs tests/interop's npm packages)";
    ASSERT_FALSE(GetTestCerts().dir.empty());
  }
};

// Drives one side (a client connection or a server endpoint) on a UDP socket.
template <typename Step>
bool Drive(dp::UdpSocket& sock, Step&& step, const std::function<bool()>& done, uint64_t limit_ns) {
  const Timestamp end = MonotonicNs() + limit_ns;
  std::vector<uint8_t> scratch(64 * 1500);
  for (;;) {
    if (done()) return true;
    const Timestamp now = MonotonicNs();
    if (now >= end) return false;
    const Timestamp next = step(now, scratch);
    const Timestamp wake = std::min({next, end, now + 50 * kMillisecond});
    const uint64_t wait = wake > now ? wake - now : 0;
    pollfd p{sock.fd(), POLLIN, 0};
    const timespec ts{time_t(wait / kSecond), long(wait % kSecond)};
    ::ppoll(&p, 1, &ts, nullptr);
  }
}

TEST_F(QuicInterop, OurClientTheirServer) {
  const auto& certs = GetTestCerts();
  Subprocess node;
  ASSERT_TRUE(node.Start({"node", kInterop + "/quic_peer.mjs", "server", "--cert", certs.server_cert,
                          "--key", certs.server_key, "--seconds", "90"},
                         certs.dir + "/node-server.log"));
  int port = 0;
  for (std::string line; port == 0;) {
    line = node.ReadLine(15000);
    ASSERT_FALSE(line.empty()) << "the node server did not report its port";
    if (line.rfind("{\"port\":", 0) == 0) port = std::stoi(line.substr(8));
  }

  auto tls = TlsContext::Create(TlsContext::Side::kClient, qbridge::testing::ClientTlsConfig());
  ASSERT_TRUE(tls.ok());
  auto sock = dp::UdpSocket::Bind(Address::FromIpPort("127.0.0.1", 0));
  ASSERT_TRUE(sock.ok());
  Events events;
  auto client = Connection::Connect(**tls, TransportConfig{},
                                    Path{(*sock)->local(), Address::FromIpPort("127.0.0.1", uint16_t(port))},
                                    &events, MonotonicNs());
  ASSERT_TRUE(client.ok());
  Connection& c = **client;
  auto emit = [&](const Path& p, std::span<const uint8_t> d, size_t seg) { (*sock)->Send(p, d, seg); };
  auto step = [&](Timestamp now, std::vector<uint8_t>& scratch) {
    (*sock)->Receive([&](const Path& p, std::span<const uint8_t> d) { c.Read(p, d, now); });
    if (c.Expiry() <= now) c.HandleExpiry(now);
    c.Write(now, scratch, 64, emit);
    return c.Expiry();
  };
  ASSERT_TRUE(Drive(**sock, step, [&] { return events.confirmed; }, 15 * kSecond));
  EXPECT_EQ(c.alpn(), "mqtt");
  auto sid = c.OpenStream();
  ASSERT_TRUE(sid.ok());
  std::vector<uint8_t> payload(kBytes);
  for (size_t i = 0; i < kBytes; ++i) payload[i] = Pattern(i);
  ASSERT_TRUE(c.Send(*sid, Buffer::Copy(payload), true).ok());
  ASSERT_TRUE(Drive(**sock, step, [&] { return events.fin[*sid]; }, 90 * kSecond))
      << "echoed " << events.data[*sid].size() << " of " << kBytes;
  EXPECT_TRUE(events.data[*sid] == payload);
  c.Close(0);
  std::vector<uint8_t> scratch(64 * 1500);
  c.Write(MonotonicNs(), scratch, 1, emit);
}

TEST_F(QuicInterop, TheirClientOurServer) {
  const auto& certs = GetTestCerts();
  auto tls = TlsContext::Create(TlsContext::Side::kServer, qbridge::testing::ServerTlsConfig());
  ASSERT_TRUE(tls.ok());
  auto sock = dp::UdpSocket::Bind(Address::FromIpPort("127.0.0.1", 0));
  ASSERT_TRUE(sock.ok());
  EndpointConfig ec;
  ec.retry = RetryMode::kAlways;  // quiche must follow our Retry too
  auto ep = ServerEndpoint::Create(**tls, ec);
  ASSERT_TRUE(ep.ok());
  Events events;
  events.echo = true;
  (*ep)->set_on_accept([&](Connection& c) {
    events.conn = &c;
    return &events;
  });
  (*ep)->set_on_close([&](Connection&) { events.conn = nullptr; });
  const uint16_t port = ntohs(reinterpret_cast<const sockaddr_in*>(&(*sock)->local().storage)->sin_port);
  Subprocess node;
  ASSERT_TRUE(node.Start({"node", kInterop + "/quic_peer.mjs", "client", "--port", std::to_string(port),
                          "--ca", certs.ca, "--server-name", "localhost", "--bytes",
                          std::to_string(kBytes), "--seconds", "90"},
                         certs.dir + "/node-client.log"));
  ServerEndpoint& server = **ep;
  auto emit = [&](const Path& p, std::span<const uint8_t> d, size_t seg) { (*sock)->Send(p, d, seg); };
  auto step = [&](Timestamp now, std::vector<uint8_t>& scratch) {
    (*sock)->Receive([&](const Path& p, std::span<const uint8_t> d) { server.Receive(p, d, now, emit); });
    if (server.Expiry() <= now) server.HandleExpiry(now);
    server.WriteAll(now, scratch, 64, emit);
    return server.Expiry();
  };
  int status = -1;
  ASSERT_TRUE(Drive(**sock, step, [&] { return (status = node.TryWait()) >= 0; }, 100 * kSecond));
  std::string verdict;
  for (std::string line; (line = node.ReadLine(2000)) != "";) {
    if (line.rfind("{", 0) == 0) verdict = line;
  }
  std::ifstream log(certs.dir + "/node-client.log");
  const std::string stderr_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_EQ(status, 0) << verdict << "\n" << stderr_text;
  EXPECT_EQ(verdict, "{\"ok\":true,\"sent\":10485760,\"received\":10485760}") << stderr_text;
  EXPECT_EQ(server.stats().retry_sent, 1u);
  EXPECT_TRUE(events.confirmed);
  EXPECT_EQ(events.alpn, "mqtt");
}

}  // namespace
}  // namespace qbridge::quic
