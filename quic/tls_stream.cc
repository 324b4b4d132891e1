#include "quic/tls_stream.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace qbridge::quic {

namespace {
constexpr size_t kMaxRecord = 16384;            // TLS plaintext per record
constexpr int kMaxSteps = 64;                   // records (or non-fatal alerts) per Read()

bool Transient(int e) { return e == EAGAIN || e == EWOULDBLOCK || e == EINTR; }
}  // namespace

absl::StatusOr<std::unique_ptr<TlsStream>> TlsStream::Create(const TlsContext& ctx, int fd) {
  absl::StatusOr<gnutls_session_t> s = ctx.NewStreamSession();
  if (!s.ok()) return s.status();
  std::unique_ptr<TlsStream> t(new TlsStream(*s, fd));
  gnutls_transport_set_ptr(t->s_, t.get());
  gnutls_transport_set_pull_function(t->s_, Pull);
  gnutls_transport_set_vec_push_function(t->s_, PushVec);
  gnutls_transport_set_pull_timeout_function(t->s_, PullTimeout);
  gnutls_session_set_ptr(t->s_, &t->verify_status_);
  // The worker's own deadlines end a handshake that stalls (a south connection's CONNECT
  // timeout, a bridge's connect timeout); GnuTLS never waits.
  gnutls_handshake_set_timeout(t->s_, 0);
  return t;
}

TlsStream::~TlsStream() { gnutls_deinit(s_); }

ssize_t TlsStream::Pull(gnutls_transport_ptr_t p, void* data, size_t len) {
  auto* t = static_cast<TlsStream*>(p);
  const ssize_t n = ::recv(t->fd_, data, len, MSG_DONTWAIT);
  if (n < 0) {
    t->drained_ = Transient(errno);
    gnutls_transport_set_errno(t->s_, errno == EWOULDBLOCK ? EAGAIN : errno);
    return -1;
  }
  t->bytes_in_ += size_t(n);
  return n;
}

int TlsStream::PullTimeout(gnutls_transport_ptr_t p, unsigned) {
  // Never blocks: readable now or not.
  pollfd pfd{static_cast<TlsStream*>(p)->fd_, POLLIN, 0};
  return ::poll(&pfd, 1, 0);
}

ssize_t TlsStream::PushVec(gnutls_transport_ptr_t p, const giovec_t* iov, int iovcnt) {
  auto* t = static_cast<TlsStream*>(p);
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  size_t sent = 0;
  if (!t->wants_write()) {  // in order: nothing goes out ahead of what waits
    msghdr mh{};
    mh.msg_iov = const_cast<iovec*>(reinterpret_cast<const iovec*>(iov));
    mh.msg_iovlen = size_t(iovcnt);
    const ssize_t n = ::sendmsg(t->fd_, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && !Transient(errno)) {
      t->send_errno_ = errno;
      gnutls_transport_set_errno(t->s_, errno);
      return -1;
    }
    sent = n > 0 ? size_t(n) : 0;
    t->bytes_out_ += sent;
  }
  // What the socket did not take waits in out_; GnuTLS sees all of it sent, so a record is
  // never half-written from its side and encryption never has to be repeated.
  if (sent < total) {
    if (t->out_off_ == t->out_.size()) t->out_.clear(), t->out_off_ = 0;
    size_t skip = sent;
    for (int i = 0; i < iovcnt; ++i) {
      const auto* b = static_cast<const uint8_t*>(iov[i].iov_base);
      const size_t len = iov[i].iov_len;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      t->out_.insert(t->out_.end(), b + skip, b + len);
      skip = 0;
    }
  }
  return ssize_t(total);
}

TlsStream::Result TlsStream::Fail(int rc) {
  if (error_.empty()) error_ = HandshakeError(s_, rc, verify_status_);
  return Result::kFailed;
}

TlsStream::Result TlsStream::Handshake() {
  if (handshake_done_) return Result::kOk;
  // Our last flight first: GnuTLS thinks it went out, and the peer waits for it.
  if (wants_write()) {
    const Result r = Flush();
    if (r != Result::kOk) return r;
  }
  for (int i = 0; i < kMaxSteps; ++i) {
    const int rc = gnutls_handshake(s_);
    if (send_errno_ != 0) {
      error_ = std::string("write failed: ") + strerror(send_errno_);
      return Result::kFailed;
    }
    if (rc == 0) {
      handshake_done_ = true;
      return Result::kOk;
    }
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) return Result::kAgain;
    if (gnutls_error_is_fatal(rc)) {
      // The peer hears why (bad_certificate, unknown_ca, ...), unless it told us.
      if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED) (void)gnutls_alert_send_appropriate(s_, rc);
      return Fail(rc);
    }
    // A warning alert: the handshake goes on.
  }
  return Result::kAgain;
}

TlsStream::Result TlsStream::Read(std::span<uint8_t> scratch, size_t max_bytes,
                                  absl::FunctionRef<bool(std::span<const uint8_t>)> sink) {
  size_t got = 0;
  for (int steps = 0; got < max_bytes && steps < kMaxSteps; ++steps) {
    drained_ = false;
    const ssize_t n = gnutls_record_recv(s_, scratch.data(), scratch.size());
    if (n > 0) {
      got += size_t(n);
      if (!sink(std::span<const uint8_t>(scratch.data(), size_t(n)))) return Result::kOk;
      continue;
    }
    if (n == 0) return Result::kClosed;  // close_notify, or EOF after whole records
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
      if (send_errno_ != 0) return Fail(GNUTLS_E_PUSH_ERROR);
      // GnuTLS also says "again" after a post-handshake message (a session ticket): the
      // socket may hold more, so read on until the socket itself has nothing.
      if (!drained_) continue;
      return Result::kAgain;
    }
    if (n == GNUTLS_E_PREMATURE_TERMINATION) return Result::kClosed;  // EOF without close_notify
    if (n == GNUTLS_E_REHANDSHAKE) {
      // TLS 1.2 renegotiation: not offered (MQTT clients have no use for it).
      gnutls_alert_send(s_, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
      continue;
    }
    if (gnutls_error_is_fatal(int(n))) return Fail(int(n));
  }
  return Result::kOk;
}

// GnuTLS reads from the socket only the bytes the record it is on still needs (TLS, not
// DTLS), so what it holds beyond the socket is decrypted data a small scratch left behind.
bool TlsStream::more_buffered() const { return gnutls_record_check_pending(s_) > 0; }

ssize_t TlsStream::Write(std::span<const uint8_t> plain) {
  if (wants_write() && Flush() != Result::kOk) return send_errno_ != 0 ? -1 : 0;
  size_t taken = 0;
  while (taken < plain.size() && !wants_write()) {  // out_: at most one record's worth
    const size_t n = std::min(plain.size() - taken, kMaxRecord);
    const ssize_t rc = gnutls_record_send(s_, plain.data() + taken, n);
    if (rc > 0) {
      taken += size_t(rc);
      continue;
    }
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) break;
    Fail(int(rc));
    return -1;
  }
  return send_errno_ != 0 ? -1 : ssize_t(taken);
}

TlsStream::Result TlsStream::Flush() {
  while (out_off_ < out_.size()) {
    const ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      out_off_ += size_t(n);
      bytes_out_ += size_t(n);
      continue;
    }
    if (n < 0 && Transient(errno)) return Result::kAgain;
    send_errno_ = n < 0 ? errno : EPIPE;
    error_ = std::string("write failed: ") + strerror(send_errno_);
    return Result::kFailed;
  }
  out_.clear();
  out_off_ = 0;
  return Result::kOk;
}

void TlsStream::Bye() {
  if (handshake_done_) (void)gnutls_bye(s_, GNUTLS_SHUT_WR);
  (void)Flush();
}

}  // namespace qbridge::quic
