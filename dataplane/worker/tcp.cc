// MQTT over TCP on this worker: the south listeners' accepted connections (plain and TLS)
// and north mqtt-tcp:// and tls+mqtt-tcp:// bridges, as kernel sockets polled with epoll
// from the same loop (bounded reads per connection per iteration). Each TCP connection is a
// Conn with one stream, stream 0, so framing, control decisions and routing are the same as
// for QUIC (streams.cc). What a connection is sent during an iteration collects in its tx
// and is written once at the end of it (one send, or one train of TLS records, for many
// packets). TLS (quic/tls_stream.h) sits between the socket and the stream.

#include "dataplane/worker/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "dataplane/worker/conn.h"

namespace qbridge::dp {

namespace {
constexpr int kMaxTcpEvents = 64;
constexpr size_t kTcpReadBytes = 64 * 1024;
constexpr int kMaxReadsPerEvent = 4;  // per connection per iteration: fairness
// What the TCP connections together bring in per iteration, as a receive burst bounds what
// the QUIC side takes: an iteration that read everything 100 busy publishers had sent ran
// for tens of milliseconds, and the bridge it fed wrote one burst per iteration and read
// its acks and flow-control credit as rarely (the upstream sat idle while the edge
// buffered). Each connection epoll reports gets an equal share of it (4 KiB at 64
// connections), so none is starved by another's backlog (a bridge's PUBACKs and PINGRESPs
// included); what is left stays in the socket, which epoll reports again. TLS reads take at
// least one whole record.
constexpr size_t kTcpReadBudget = 256 * 1024;
constexpr size_t kMinTlsShare = 16 * 1024;
constexpr uint64_t kMaxTlsLogsPerSecond = 5;  // handshake failures beyond these are counted only
}  // namespace

void Worker::TcpWatch(Conn& c, bool out) {
  epoll_event ev{};
  ev.events = (c.rx_paused ? 0u : uint32_t(EPOLLIN | EPOLLRDHUP)) | (out ? uint32_t(EPOLLOUT) : 0u);
  ev.data.u32 = c.slot;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.tcp_out = out;
}

size_t Worker::PollTcp(MonoNs now) {
  epoll_event evs[kMaxTcpEvents];
  const int n = ::epoll_wait(epoll_fd_, evs, kMaxTcpEvents, 0);
  const size_t share = kTcpReadBudget / size_t(std::max(n, 1));
  for (int i = 0; i < n; ++i) {
    const uint32_t tag = evs[i].data.u32;
    if (tag == kListenTag || tag == kTlsListenTag) {
      const bool tls = tag == kTlsListenTag;
      TcpAccept(tls ? config_.tls_listen_fd : config_.tcp_listen_fd, tls, now);
      continue;
    }
    Conn* c = tag < slots_.size() ? slots_[tag].get() : nullptr;
    if (c == nullptr || c->fd < 0 || c->tcp_close) continue;
    const uint32_t e = evs[i].events;
    if (c->tcp_connecting) {
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0 || (e & (EPOLLERR | EPOLLHUP))) {
        CloseConn(*c, kAppNoError);
        continue;
      }
      c->tcp_connecting = false;
      if (c->tls) {
        TlsHandshake(*c);  // the ClientHello; the bridge is up once the handshake is done
      } else {
        TcpConnected(*c);
      }
      continue;
    }
    if (c->tls && !c->tls->handshake_done()) {
      TlsHandshake(*c);
      if (c->tls->handshake_done() && !c->tcp_close) TlsRead(*c, now, share);  // data behind the Finished
      continue;
    }
    // Held back, it is read again only once it hangs up or fails (reported regardless).
    if (c->rx_paused && (e & (EPOLLHUP | EPOLLERR))) Unhold(*c, 0);
    if ((e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->rx_paused)
      c->tls ? TlsRead(*c, now, share) : TcpRead(*c, now, share);
    if (c->fd >= 0 && !c->tcp_close && (e & EPOLLOUT)) TcpFlush(*c);
  }
  // Records GnuTLS read from a socket but has not handed over yet: the socket will not
  // report them again.
  if (!tls_buffered_.empty()) {
    std::vector<ConnRef> again;
    again.swap(tls_buffered_);
    for (const ConnRef& r : again) {
      Conn* c = Lookup(r);
      if (c == nullptr || !c->tls) continue;
      c->tls_buffered = false;
      if (c->fd >= 0 && !c->tcp_close && !c->rx_paused) TlsRead(*c, now, kMinTlsShare);  // Unhold: again
    }
  }
  return n > 0 ? size_t(n) : 0;
}

// A north connection's transport is ready (TCP connected; TLS: the handshake done too).
void Worker::TcpConnected(Conn& c) {
  c.streams_open = true;  // one stream: every slot writes on it
  TcpWatch(c, c.tls && c.tls->wants_write());
  Msg m = MakeMsg(MsgType::kBridgeUp, c.ref());
  m.aux = c.bridge;
  m.arg = c.dial;
  ToControlplane(m);
}

void Worker::TlsHandshake(Conn& c) {
  const uint64_t in0 = c.tls->bytes_in(), out0 = c.tls->bytes_out();
  const quic::TlsStream::Result r = c.tls->Handshake();
  stats_.rx_bytes.Inc(c.tls->bytes_in() - in0);
  stats_.tx_bytes.Inc(c.tls->bytes_out() - out0);
  switch (r) {
    case quic::TlsStream::Result::kOk:
      stats_.tls_handshakes.Inc();
      if (c.north) {
        TcpConnected(c);
      } else if (c.tcp_out != c.tls->wants_write()) {
        TcpWatch(c, c.tls->wants_write());
      }
      return;
    case quic::TlsStream::Result::kAgain:
      if (c.tcp_out != c.tls->wants_write()) TcpWatch(c, c.tls->wants_write());
      return;
    case quic::TlsStream::Result::kClosed:
    case quic::TlsStream::Result::kFailed:
      return TlsFailed(c, "handshake");
  }
}

// Counted always, logged a few times a second at most (a scan or a misconfigured fleet
// must not flood the log), and for a bridge handed to the controlplane as the reason.
void Worker::TlsFailed(Conn& c, const char* when) {
  const bool handshake = !c.tls->handshake_done();
  if (handshake) stats_.tls_handshake_failures.Inc();
  std::string why = c.tls->error().empty() ? "connection closed" : c.tls->error();
  if (handshake) {
    if (now_ - tls_log_second_ >= kSecNs) tls_log_second_ = now_, tls_failures_logged_ = 0;
    if (tls_failures_logged_++ < kMaxTlsLogsPerSecond) {
      if (c.north) {
        std::fprintf(stderr, "qbridge: bridge %u: TLS %s with %s failed: %s\n", c.bridge, when,
                     c.peer.ToString().c_str(), why.c_str());
      } else {
        std::fprintf(stderr, "qbridge: TLS listener: %s from %s failed: %s\n", when,
                     c.peer.ToString().c_str(), why.c_str());
      }
    }
  }
  if (c.north) c.why = "TLS " + std::string(when) + " failed: " + why;
  CloseConn(c, kAppNoError);
}

void Worker::TcpAccept(int listen_fd, bool tls, MonoNs now) {
  for (int i = 0; i < kMaxTcpEvents; ++i) {
    quic::Address peer;
    socklen_t peer_len = sizeof(peer.storage);
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer.storage), &peer_len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    // The last slots are the bridges': south clients never take them.
    Conn* c = live_conns_ + north_reserved_ < config_.max_conns ? AllocConn(/*north=*/false, 0)
                                                                         : nullptr;
    if (c == nullptr) {
      ::close(fd);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->tcp = true;
    peer.len = peer_len;
    c->peer = peer;
    if (tls) {
      auto t = quic::TlsStream::Create(*config_.tcp_tls, fd);
      if (!t.ok()) {  // out of memory, in effect
        stats_.conns_opened.Inc();  // FreeConn counts it closed
        FreeConn(c);
        continue;
      }
      c->tls = std::move(*t);
    }
    activity_->at(c->slot).Reset(now);
    awaiting_connect_.emplace_back(c->ref(), now + kConnectTimeoutNs);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = c->slot;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    stats_.conns_opened.Inc();
  }
}

void Worker::TcpRead(Conn& c, MonoNs now, size_t budget) {
  uint8_t buf[kTcpReadBytes];
  for (int i = 0; i < kMaxReadsPerEvent && !c.tcp_close && !c.rx_paused && budget > 0; ++i) {
    const size_t want = std::min(sizeof(buf), budget);
    const ssize_t n = ::recv(c.fd, buf, want, MSG_DONTWAIT);
    if (n > 0) {
      stats_.rx_bytes.Inc(size_t(n));
      budget -= size_t(n);
      OnStreamData(c, 0, std::span<const uint8_t>(buf, size_t(n)), false, now);
      if (size_t(n) < want) return;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    CloseConn(c, kAppNoError);  // EOF or error: the connection is over
    return;
  }
}

void Worker::TlsRead(Conn& c, MonoNs now, size_t budget) {
  uint8_t buf[kTcpReadBytes];
  const uint64_t before = c.tls->bytes_in();
  const size_t limit = std::clamp(budget, kMinTlsShare, kMaxReadsPerEvent * kTcpReadBytes);
  const quic::TlsStream::Result r = c.tls->Read(buf, limit, [&](std::span<const uint8_t> plain) {
    if (!c.tcp_close) OnStreamData(c, 0, plain, false, now);
    return !c.rx_paused;  // held back: no further record now
  });
  stats_.rx_bytes.Inc(c.tls->bytes_in() - before);
  switch (r) {
    case quic::TlsStream::Result::kOk:  // the budget ran out: come back next iteration
      QueueTlsBuffered(c);
      break;
    case quic::TlsStream::Result::kAgain:
      break;
    case quic::TlsStream::Result::kClosed:
      CloseConn(c, kAppNoError);
      break;
    case quic::TlsStream::Result::kFailed:
      TlsFailed(c, "record");
      break;
  }
  // GnuTLS answers some records itself (a KeyUpdate, an alert): written or waiting.
  if (!c.tcp_close && c.tcp_out != c.tls->wants_write()) TcpWatch(c, c.tls->wants_write());
}

// Bytes queued this iteration go out together at its end.
void Worker::QueueTlsBuffered(Conn& c) {
  if (!c.tls || c.tls_buffered || !c.tls->more_buffered()) return;
  c.tls_buffered = true;
  tls_buffered_.push_back(c.ref());
}

void Worker::FlushTcpWrites() {
  std::vector<ConnRef> dirty;
  dirty.swap(tcp_dirty_);
  for (const ConnRef& r : dirty) {
    Conn* c = Lookup(r);
    if (c == nullptr || !c->tcp) continue;
    c->tcp_dirty = false;
    if (c->fd >= 0 && !c->tcp_close && !c->tcp_connecting) TcpFlush(*c);
  }
  dirty.clear();
  if (tcp_dirty_.empty()) tcp_dirty_.swap(dirty);  // keep the capacity
}

void Worker::TcpFlush(Conn& c) {
  if (c.tls) {
    if (!c.tls->handshake_done()) return;  // written once the handshake is done
    const uint64_t before = c.tls->bytes_out();
    quic::TlsStream::Result r = c.tls->Flush();
    while (r == quic::TlsStream::Result::kOk && c.tx_off < c.tx.size()) {
      const ssize_t n = c.tls->Write(std::span<const uint8_t>(c.tx.data() + c.tx_off, c.tx.size() - c.tx_off));
      if (n < 0) r = quic::TlsStream::Result::kFailed;
      if (n <= 0) break;
      c.tx_off += size_t(n);
      if (c.tls->wants_write()) r = quic::TlsStream::Result::kAgain;
    }
    stats_.tx_bytes.Inc(c.tls->bytes_out() - before);
    if (r == quic::TlsStream::Result::kFailed) return TlsFailed(c, "write");
    if (c.tx_off == c.tx.size()) {
      c.tx.clear();
      c.tx_off = 0;
    } else if (c.tx_off > (64u << 10) && c.tx_off * 2 > c.tx.size()) {
      c.tx.erase(c.tx.begin(), c.tx.begin() + long(c.tx_off));
      c.tx_off = 0;
    }
    if (c.tcp_out != c.tls->wants_write()) TcpWatch(c, c.tls->wants_write());
    return;
  }
  while (c.tx_off < c.tx.size()) {
    const ssize_t n = ::send(c.fd, c.tx.data() + c.tx_off, c.tx.size() - c.tx_off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      c.tx_off += size_t(n);
      stats_.tx_bytes.Inc(size_t(n));
      continue;
    }
    if (c.tx_off > (64u << 10) && c.tx_off * 2 > c.tx.size()) {  // keep the buffer bounded
      c.tx.erase(c.tx.begin(), c.tx.begin() + long(c.tx_off));
      c.tx_off = 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c.tcp_out) TcpWatch(c, true);
      return;
    }
    if (n < 0 && errno == EINTR) continue;
    return CloseConn(c, kAppNoError);
  }
  c.tx.clear();
  c.tx_off = 0;
  if (c.tcp_out) TcpWatch(c, false);
}

void Worker::DialTcpBridge(Conn& c, const BridgeDial& d) {
  const int fd = ::socket(d.remote.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return OnNorthClosed(&c);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c.fd = fd;
  c.tcp = true;
  c.peer = d.remote;
  if (d.tls != nullptr) {
    auto t = quic::TlsStream::Create(*d.tls, fd);
    if (!t.ok()) {
      c.why = std::string(t.status().message());
      return OnNorthClosed(&c);
    }
    c.tls = std::move(*t);
  }
  c.tcp_connecting = true;
  c.version = d.version;
  north_[c.bridge] = &c;
  activity_->at(c.slot).Reset(now_);
  stats_.conns_opened.Inc();
  if (::connect(fd, d.remote.sa(), d.remote.len) != 0 && errno != EINPROGRESS) {
    c.tcp_connecting = false;
    return CloseConn(c, kAppNoError);
  }
  epoll_event ev{};
  ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
  ev.data.u32 = c.slot;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  c.tcp_out = true;
}

void Worker::FinishTcpCloses() {
  std::vector<ConnRef> now_closing;
  now_closing.swap(tcp_closing_);
  for (const ConnRef& r : now_closing) {
    Conn* c = Lookup(r);
    if (c == nullptr || !c->tcp) continue;
    if (c->fd >= 0 && c->tls && c->tls->handshake_done()) {
      // Last words (CONNACK refusal, DISCONNECT) and close_notify: what the socket takes now.
      if (c->tx_off < c->tx.size())
        (void)c->tls->Write(std::span<const uint8_t>(c->tx.data() + c->tx_off, c->tx.size() - c->tx_off));
      c->tls->Bye();
    } else if (c->fd >= 0 && !c->tls && c->tx_off < c->tx.size() && !c->tcp_connecting) {
      // Last words (CONNACK refusal, DISCONNECT): one more non-blocking try, then close.
      (void)::send(c->fd, c->tx.data() + c->tx_off, c->tx.size() - c->tx_off, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    if (c->north) {
      OnNorthClosed(c);
    } else {
      Msg m = MakeMsg(MsgType::kConnClosed, c->ref());
      ToControlplane(m);
      FreeConn(c);
    }
  }
}

}  // namespace qbridge::dp
