// A QUIC client and server endpoint on two real UDP sockets on loopback, driven by one
// thread with ppoll and the monotonic clock: the kernel path (GSO/GRO) end to end.
#pragma once

#include <poll.h>
#include <time.h>

#include <functional>
#include <memory>
#include <vector>

#include "dataplane/udp_socket.h"
#include "quic/connection.h"
#include "quic/endpoint.h"

namespace qbridge::testing {

inline quic::Timestamp MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return quic::Timestamp(ts.tv_sec) * 1'000'000'000 + quic::Timestamp(ts.tv_nsec);
}

class UdpQuicPair {
 public:
  std::unique_ptr<dp::UdpSocket> server_sock, client_sock;
  quic::ServerEndpoint* server = nullptr;
  quic::Connection* client = nullptr;

  // Binds both sockets on 127.0.0.1 with kernel-chosen ports.
  absl::Status Bind(dp::UdpOptions opts = {}) {
    auto s = dp::UdpSocket::Bind(quic::Address::FromIpPort("127.0.0.1", 0), opts);
    if (!s.ok()) return s.status();
    auto c = dp::UdpSocket::Bind(quic::Address::FromIpPort("127.0.0.1", 0), opts);
    if (!c.ok()) return c.status();
    server_sock = std::move(*s);
    client_sock = std::move(*c);
    return absl::OkStatus();
  }
  quic::Path ClientPath() const { return {client_sock->local(), server_sock->local()}; }
  quic::Timestamp now() const { return MonotonicNs(); }

  // Runs until done() or `limit_ns` of wall time; returns done().
  bool RunUntil(const std::function<bool()>& done, uint64_t limit_ns) {
    const quic::Timestamp end = MonotonicNs() + limit_ns;
    std::vector<uint8_t> scratch(64 * 1500);
    auto client_emit = [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
      client_sock->Send(p, d, seg);
    };
    auto server_emit = [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
      server_sock->Send(p, d, seg);
    };
    for (;;) {
      quic::Timestamp now = MonotonicNs();
      if (done()) return true;
      if (now >= end) return false;
      client_sock->Receive([&](const quic::Path& p, std::span<const uint8_t> d) {
        client->Read(p, d, now);
      });
      server_sock->Receive([&](const quic::Path& p, std::span<const uint8_t> d) {
        server->Receive(p, d, now, server_emit);
      });
      now = MonotonicNs();
      if (client->Expiry() <= now) client->HandleExpiry(now);
      if (server->Expiry() <= now) server->HandleExpiry(now);
      client->Write(now, scratch, 64, client_emit);
      server->WriteAll(now, scratch, 64, server_emit);
      if (done()) return true;
      const quic::Timestamp next = std::min({client->Expiry(), server->Expiry(), end});
      now = MonotonicNs();
      const uint64_t wait = next > now ? next - now : 0;
      pollfd fds[2] = {{client_sock->fd(), POLLIN, 0}, {server_sock->fd(), POLLIN, 0}};
      const timespec ts{time_t(wait / 1'000'000'000), long(wait % 1'000'000'000)};
      ::ppoll(fds, 2, &ts, nullptr);
    }
  }
};

}  // namespace qbridge::testing
