// libFuzzer target: the TLS listener's record path (quic/tls_stream, as [listeners.ssl] runs
// it) fed hostile bytes over a socketpair. The first input byte picks where they go:
//   0: in place of a ClientHello, to a fresh server session (handshake parsing);
//   1: after a real handshake with our own client, raw, as if they were records (record
//      headers, MACs, alerts, post-handshake messages);
//   2: after a real handshake, encrypted by the client as application data, so valid
//      records carry arbitrary plaintext into the server's read path and on into the MQTT
//      framer, as the worker does with it.
// Properties: no crash, no leak, no hang; every outcome is a result (again, closed, failed
// with an error text) or plaintext.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "mqtt/framer.h"
#include "quic/tls_stream.h"
#include "tests/support/test_certs.h"

using namespace qbridge::quic;

namespace {

std::unique_ptr<TlsContext> server_ctx, client_ctx;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// Reads everything the server will give now, into a framer; checks the outcome's shape.
void DrainServer(TlsStream& s) {
  qbridge::mqtt::Framer framer(1 << 20);
  std::vector<uint8_t> scratch(16 << 10);
  for (int i = 0; i < 64; ++i) {
    const TlsStream::Result r = s.Read(scratch, 64 << 10, [&](std::span<const uint8_t> p) {
      if (!framer.failed()) (void)framer.Feed(qbridge::mqtt::Bytes(p.data(), p.size()), [](const auto&) { return true; });
      return true;
    });
    if (r == TlsStream::Result::kFailed) Check(!s.error().empty());
    if (r != TlsStream::Result::kOk) return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const auto& certs = qbridge::testing::GetTestCerts();
  Check(!certs.dir.empty());
  TlsConfig s;
  s.stream = true;
  s.certfile = certs.server_cert;
  s.keyfile = certs.server_key;
  s.verify_peer = false;
  server_ctx = std::move(*TlsContext::Create(TlsContext::Side::kServer, s));
  TlsConfig c;
  c.stream = true;
  c.cacertfile = certs.ca;
  c.server_name = "localhost";
  client_ctx = std::move(*TlsContext::Create(TlsContext::Side::kClient, c));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 16384) return 0;
  const uint8_t mode = data[0] % 3;
  std::span<const uint8_t> body(data + 1, size - 1);
  int fds[2];
  Check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
  {
    auto server = TlsStream::Create(*server_ctx, fds[0]);
    Check(server.ok());
    TlsStream& s = **server;
    if (mode == 0) {
      Check(::send(fds[1], body.data(), body.size(), 0) == ssize_t(body.size()) || body.empty());
      TlsStream::Result r = TlsStream::Result::kAgain;
      for (int i = 0; i < 8 && r == TlsStream::Result::kAgain; ++i) r = s.Handshake();
      if (r == TlsStream::Result::kFailed) Check(!s.error().empty());
      if (r == TlsStream::Result::kOk) DrainServer(s);  // cannot happen without a key; harmless
    } else {
      auto client = TlsStream::Create(*client_ctx, fds[1]);
      Check(client.ok());
      TlsStream::Result rs = TlsStream::Result::kAgain, rc = TlsStream::Result::kAgain;
      for (int i = 0; i < 32 && (rs == TlsStream::Result::kAgain || rc == TlsStream::Result::kAgain); ++i) {
        if (rc == TlsStream::Result::kAgain) rc = (*client)->Handshake();
        if (rs == TlsStream::Result::kAgain) rs = s.Handshake();
      }
      Check(rs == TlsStream::Result::kOk && rc == TlsStream::Result::kOk);
      if (mode == 1) {
        Check(::send(fds[1], body.data(), body.size(), 0) == ssize_t(body.size()) || body.empty());
      } else {
        size_t off = 0;
        for (int i = 0; i < 64 && off < body.size(); ++i) {
          const ssize_t n = (*client)->Write(body.subspan(off));
          Check(n >= 0);
          off += size_t(n);
          DrainServer(s);
        }
      }
      DrainServer(s);
    }
  }
  ::close(fds[0]);
  ::close(fds[1]);
  return 0;
}
