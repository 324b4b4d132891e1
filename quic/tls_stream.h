// MQTT over TLS on a non-blocking TCP socket (the [listeners.ssl] listener's connections and
// tls+mqtt-tcp:// bridges), one GnuTLS session per connection, driven from the worker that
// owns the socket.
//
// Copies: GnuTLS reads ciphertext from the socket into its own record buffer and decrypts
// into the caller's buffer; on the way out it encrypts the caller's plaintext into its
// record buffer and the push function hands that straight to sendmsg(). Only ciphertext the
// socket would not take right now is copied, into `out_`: Write encrypts nothing more until
// that is written, and Handshake sends it before it goes on. What waits there is one write's
// last record, or a handshake flight, plus whatever GnuTLS answers on its own meanwhile (an
// alert, a KeyUpdate).
#pragma once

#include <gnutls/gnutls.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "quic/tls.h"

namespace qbridge::quic {

class TlsStream {
 public:
  enum class Result {
    kOk,      // done (handshake complete; everything readable was read; output written)
    kAgain,   // call again when the socket is readable (or writable: wants_write())
    kClosed,  // the peer closed (close_notify or EOF)
    kFailed,  // a TLS error: error() says which; the connection is over
  };

  // A session of `ctx` (a stream context: TlsConfig::stream) on the connected socket `fd`,
  // which the caller keeps owning.
  static absl::StatusOr<std::unique_ptr<TlsStream>> Create(const TlsContext& ctx, int fd);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // Advances the handshake (first writing what the socket did not take before); kOk once it
  // is complete.
  Result Handshake();
  bool handshake_done() const { return handshake_done_; }

  // Decrypts what the socket has, handing each piece of plaintext to `sink`, for at most
  // `max_bytes` of plaintext: kAgain when the socket is drained, kOk when the budget ran
  // out or `sink` returned false (more_buffered() says whether GnuTLS already holds more:
  // the socket will not wake the caller for that), kClosed or kFailed when the connection
  // is over.
  Result Read(std::span<uint8_t> scratch, size_t max_bytes,
              absl::FunctionRef<bool(std::span<const uint8_t>)> sink);
  bool more_buffered() const;

  // Encrypts and sends `plain`. Returns how many bytes of it were taken (all of them unless
  // ciphertext from before is still waiting for the socket), or -1 on failure.
  ssize_t Write(std::span<const uint8_t> plain);
  // Writes what the socket would not take before: kOk when nothing waits any more.
  Result Flush();
  bool wants_write() const { return out_off_ < out_.size(); }
  size_t pending_out() const { return out_.size() - out_off_; }
  // Sends close_notify (best effort: whatever the socket takes now).
  void Bye();

  const std::string& error() const { return error_; }
  uint64_t bytes_in() const { return bytes_in_; }    // ciphertext read from the socket
  uint64_t bytes_out() const { return bytes_out_; }  // ciphertext written to it
  gnutls_session_t session() const { return s_; }

 private:
  TlsStream(gnutls_session_t s, int fd) : s_(s), fd_(fd) {}
  static ssize_t Pull(gnutls_transport_ptr_t p, void* data, size_t len);
  static ssize_t PushVec(gnutls_transport_ptr_t p, const giovec_t* iov, int iovcnt);
  static int PullTimeout(gnutls_transport_ptr_t p, unsigned ms);
  Result Fail(int rc);

  gnutls_session_t s_;
  int fd_;
  bool handshake_done_ = false;
  unsigned verify_status_ = 0;  // a client certificate's failed verification (server side)
  std::vector<uint8_t> out_;    // ciphertext the socket would not take yet
  size_t out_off_ = 0;
  int send_errno_ = 0;          // a write failed for good (not EAGAIN)
  bool drained_ = false;        // the last socket read found nothing
  std::string error_;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

}  // namespace qbridge::quic
