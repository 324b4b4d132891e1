// MQTT over TCP on this worker: the south listener's accepted connections and north
// mqtt-tcp:// bridges, as kernel sockets polled with epoll from the same loop (bounded reads
// per connection per iteration). Each TCP connection is a Conn with one stream, stream 0,
// so framing, control decisions and routing are the same as for QUIC (streams.cc).

#include "dataplane/worker/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "dataplane/worker/conn.h"

namespace qbridge::dp {

namespace {
constexpr int kMaxTcpEvents = 64;
constexpr size_t kTcpReadBytes = 64 * 1024;
constexpr int kMaxReadsPerEvent = 4;  // per connection per iteration: fairness
}  // namespace

void Worker::TcpWatch(Conn& c, bool out) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (out ? uint32_t(EPOLLOUT) : 0u);
  ev.data.u32 = c.slot;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.tcp_out = out;
}

size_t Worker::PollTcp(MonoNs now) {
  epoll_event evs[kMaxTcpEvents];
  const int n = ::epoll_wait(epoll_fd_, evs, kMaxTcpEvents, 0);
  for (int i = 0; i < n; ++i) {
    const uint32_t tag = evs[i].data.u32;
    if (tag == kListenTag) {
      TcpAccept(now);
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
      c->streams_open = true;  // one stream: every slot writes on it
      TcpWatch(*c, false);
      Msg m = MakeMsg(MsgType::kBridgeUp, c->ref());
      m.aux = c->bridge;
      m.arg = c->dial;
      ToControlplane(m);
      continue;
    }
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) TcpRead(*c, now);
    if (c->fd >= 0 && !c->tcp_close && (e & EPOLLOUT)) TcpFlush(*c);
  }
  return n > 0 ? size_t(n) : 0;
}

void Worker::TcpAccept(MonoNs now) {
  for (int i = 0; i < kMaxTcpEvents; ++i) {
    const int fd = ::accept4(config_.tcp_listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
    activity_->at(c->slot).Reset(now);
    awaiting_connect_.emplace_back(c->ref(), now + kConnectTimeoutNs);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = c->slot;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    stats_.conns_opened.Inc();
  }
}

void Worker::TcpRead(Conn& c, MonoNs now) {
  uint8_t buf[kTcpReadBytes];
  for (int i = 0; i < kMaxReadsPerEvent && !c.tcp_close; ++i) {
    const ssize_t n = ::recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      stats_.rx_bytes.Inc(size_t(n));
      OnStreamData(c, 0, std::span<const uint8_t>(buf, size_t(n)), false, now);
      if (size_t(n) < sizeof(buf)) return;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    CloseConn(c, kAppNoError);  // EOF or error: the connection is over
    return;
  }
}

void Worker::TcpFlush(Conn& c) {
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
    if (c->fd >= 0 && c->tx_off < c->tx.size() && !c->tcp_connecting) {
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
