// TlsStream: TLS over a non-blocking stream socket, client and server both ours, over a
// socketpair. Handshakes and verification outcomes, data both ways, a transfer far larger
// than the socket buffers (ciphertext waiting in out_ and written later, in order),
// close_notify, garbage in place of records.
#include "quic/tls_stream.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/support/test_certs.h"

namespace qbridge::quic {
namespace {

using namespace std::string_literals;

using testing::GetTestCerts;
using R = TlsStream::Result;

std::unique_ptr<TlsContext> Server(const std::string& cert, bool verify_peer = false, bool require = true) {
  TlsConfig c;
  c.stream = true;
  c.certfile = cert;
  c.keyfile = GetTestCerts().server_key;
  c.verify_peer = verify_peer;
  c.fail_if_no_peer_cert = require;
  if (verify_peer) c.cacertfile = GetTestCerts().ca;
  auto t = TlsContext::Create(TlsContext::Side::kServer, c);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::unique_ptr<TlsContext> Client(const std::string& name, const std::string& ca, bool with_cert = false) {
  TlsConfig c;
  c.stream = true;
  c.cacertfile = ca;
  c.server_name = name;
  if (with_cert) {
    c.certfile = GetTestCerts().client_cert;
    c.keyfile = GetTestCerts().client_key;
  }
  auto t = TlsContext::Create(TlsContext::Side::kClient, c);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

class TlsStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(GetTestCerts().dir.empty());
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds_), 0);
  }
  void TearDown() override {
    server_.reset();
    client_.reset();
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void Open(const TlsContext& server, const TlsContext& client) {
    auto s = TlsStream::Create(server, fds_[0]);
    auto c = TlsStream::Create(client, fds_[1]);
    ASSERT_TRUE(s.ok() && c.ok());
    server_ = std::move(*s);
    client_ = std::move(*c);
  }
  // Steps both handshakes until both are done or one fails (bounded).
  std::pair<R, R> Handshake() {
    R s = R::kAgain, c = R::kAgain;
    for (int i = 0; i < 100 && (s == R::kAgain || c == R::kAgain); ++i) {
      if (c == R::kAgain) c = client_->Handshake();
      if (s == R::kAgain) s = server_->Handshake();
    }
    return {s, c};
  }
  // Everything readable on `t` now, as a string; `last` gets the final result.
  std::string Drain(TlsStream& t, R* last = nullptr) {
    std::string out;
    std::vector<uint8_t> scratch(64 << 10);
    R r;
    do {
      r = t.Read(scratch, 1 << 20, [&](std::span<const uint8_t> p) {
        out.append(p.begin(), p.end());
        return true;
      });
    } while (r == R::kOk);
    if (last) *last = r;
    return out;
  }

  int fds_[2] = {-1, -1};
  std::unique_ptr<TlsStream> server_, client_;
};

TEST_F(TlsStreamTest, HandshakeThenDataBothWays) {
  auto server = Server(GetTestCerts().server_cert);
  auto client = Client("localhost", GetTestCerts().ca);
  Open(*server, *client);
  EXPECT_EQ(Handshake(), std::make_pair(R::kOk, R::kOk)) << server_->error() << " / " << client_->error();
  const std::string hello = "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"s;
  EXPECT_EQ(client_->Write({reinterpret_cast<const uint8_t*>(hello.data()), hello.size()}), ssize_t(hello.size()));
  EXPECT_EQ(Drain(*server_), hello);
  const std::string ack = "\x20\x02\x00\x00"s;
  EXPECT_EQ(server_->Write({reinterpret_cast<const uint8_t*>(ack.data()), ack.size()}), ssize_t(ack.size()));
  EXPECT_EQ(Drain(*client_), ack);  // the server's session tickets are taken in stride
  EXPECT_GT(server_->bytes_in(), hello.size());  // ciphertext: more than the plaintext
}

// 4 MiB through socket buffers of a few KiB: Write takes what it can, the rest of a record
// waits in out_ (wants_write) and Flush sends it; the reader gets every byte in order.
TEST_F(TlsStreamTest, LargeTransferThroughSmallBuffersArrivesWhole) {
  const int small = 4096;
  ::setsockopt(fds_[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  ::setsockopt(fds_[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  auto server = Server(GetTestCerts().server_cert);
  auto client = Client("localhost", GetTestCerts().ca);
  Open(*server, *client);
  ASSERT_EQ(Handshake(), std::make_pair(R::kOk, R::kOk));
  Drain(*client_);  // tickets
  std::vector<uint8_t> data(4 << 20);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 131 + (i >> 12));
  size_t sent = 0;
  std::string got;
  bool waited = false;
  for (int rounds = 0; rounds < 100000 && got.size() < data.size(); ++rounds) {
    if (sent < data.size()) {
      const ssize_t n = client_->Write({data.data() + sent, data.size() - sent});
      ASSERT_GE(n, 0) << client_->error();
      sent += size_t(n);
    } else if (client_->wants_write()) {
      ASSERT_NE(client_->Flush(), R::kFailed);
    }
    waited |= client_->wants_write();
    got += Drain(*server_);
  }
  EXPECT_TRUE(waited) << "the socket never pushed back: the test did not test out_";
  ASSERT_EQ(got.size(), data.size());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), reinterpret_cast<const uint8_t*>(got.data())));
}

TEST_F(TlsStreamTest, CloseNotifyEndsTheStream) {
  auto server = Server(GetTestCerts().server_cert);
  auto client = Client("localhost", GetTestCerts().ca);
  Open(*server, *client);
  ASSERT_EQ(Handshake(), std::make_pair(R::kOk, R::kOk));
  client_->Bye();
  R last;
  Drain(*server_, &last);
  EXPECT_EQ(last, R::kClosed);
}

TEST_F(TlsStreamTest, ClientRefusesWrongNameAndSaysWhy) {
  auto server = Server(GetTestCerts().wrong_name_cert);
  auto client = Client("localhost", GetTestCerts().ca);
  Open(*server, *client);
  auto [s, c] = Handshake();
  EXPECT_EQ(c, R::kFailed);
  EXPECT_NE(client_->error().find("does not match"), std::string::npos) << client_->error();
  EXPECT_EQ(s, R::kFailed);
  EXPECT_NE(server_->error().find("alert"), std::string::npos) << server_->error();
}

TEST_F(TlsStreamTest, ClientRefusesExpiredCertificate) {
  auto server = Server(GetTestCerts().expired_server_cert);
  auto client = Client("localhost", GetTestCerts().ca);
  Open(*server, *client);
  EXPECT_EQ(Handshake().second, R::kFailed);
  EXPECT_NE(client_->error().find("expired"), std::string::npos) << client_->error();
}

TEST_F(TlsStreamTest, ServerRequiresClientCertificate) {
  auto server = Server(GetTestCerts().server_cert, /*verify_peer=*/true, /*require=*/true);
  auto without = Client("localhost", GetTestCerts().ca);
  Open(*server, *without);
  auto [s, c] = Handshake();
  EXPECT_EQ(s, R::kFailed);
  EXPECT_NE(server_->error().find("certificate"), std::string::npos) << server_->error();
}

TEST_F(TlsStreamTest, ServerAcceptsClientCertificateFromItsCa) {
  auto server = Server(GetTestCerts().server_cert, /*verify_peer=*/true, /*require=*/true);
  auto with = Client("localhost", GetTestCerts().ca, /*with_cert=*/true);
  Open(*server, *with);
  EXPECT_EQ(Handshake(), std::make_pair(R::kOk, R::kOk)) << server_->error();
}

TEST_F(TlsStreamTest, RequestedButNotRequiredLetsAClientWithoutOneIn) {
  auto server = Server(GetTestCerts().server_cert, /*verify_peer=*/true, /*require=*/false);
  auto without = Client("localhost", GetTestCerts().ca);
  Open(*server, *without);
  EXPECT_EQ(Handshake(), std::make_pair(R::kOk, R::kOk)) << server_->error();
}

// Not TLS at all (an MQTT client on the wrong port): the server fails the handshake with an
// error, no crash, nothing handed over.
TEST_F(TlsStreamTest, GarbageInsteadOfAClientHelloFails) {
  auto server = Server(GetTestCerts().server_cert);
  auto s = TlsStream::Create(*server, fds_[0]);
  ASSERT_TRUE(s.ok());
  const std::string connect = "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"s;
  ASSERT_EQ(::send(fds_[1], connect.data(), connect.size(), 0), ssize_t(connect.size()));
  R r = R::kAgain;
  for (int i = 0; i < 10 && r == R::kAgain; ++i) r = (*s)->Handshake();
  EXPECT_EQ(r, R::kFailed);
  EXPECT_FALSE((*s)->error().empty());
}

}  // namespace
}  // namespace qbridge::quic
