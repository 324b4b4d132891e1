#include "dataplane/udp_socket.h"

#include <fcntl.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <netinet/ip.h>

#include "absl/strings/str_cat.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace qbridge::dp {

absl::StatusOr<std::unique_ptr<UdpSocket>> UdpSocket::Bind(const quic::Address& local,
                                                           UdpOptions options) {
  if (local.empty()) return absl::InvalidArgumentError("udp: no local address");
  const int family = local.storage.ss_family;
  const int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "udp: socket");
  std::unique_ptr<UdpSocket> s(new UdpSocket(fd));
  const int one = 1;
  // QUIC datagrams carry DF (RFC 9000 14): PMTUD probes must fail rather than fragment.
  if (family == AF_INET) {
    ::setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
    const int probe = IP_PMTUDISC_PROBE;
    ::setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &probe, sizeof(probe));
  } else {
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_DONTFRAG, &one, sizeof(one));
  }
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options.rcvbuf, sizeof(options.rcvbuf));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options.sndbuf, sizeof(options.sndbuf));
  if (options.reuseport) ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (::bind(fd, local.sa(), local.len) != 0)
    return absl::ErrnoToStatus(errno, absl::StrCat("udp: bind ", local.ToString()));
  s->local_.len = sizeof(s->local_.storage);
  ::getsockname(fd, s->local_.sa(), &s->local_.len);
  // GSO is probed by asking for it; kernels without it refuse the option.
  if (options.gso) {
    const int seg = 1200;
    s->gso_ = ::setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof(seg)) == 0;
    if (s->gso_) {
      const int off = 0;  // per-send segment sizes come in cmsgs
      ::setsockopt(fd, SOL_UDP, UDP_SEGMENT, &off, sizeof(off));
    }
  }
  if (options.gro) s->gro_ = ::setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0;
  s->slots_.resize(kBatch);
  s->msgs_.resize(kBatch);
  return s;
}

UdpSocket::~UdpSocket() { ::close(fd_); }

size_t UdpSocket::ReceiveBatch() {
  for (size_t i = 0; i < kBatch; ++i) {
    Slot& sl = slots_[i];
    sl.iov = {sl.buf.data(), sl.buf.size()};
    msghdr& h = msgs_[i].msg_hdr;
    h = {};
    h.msg_name = &sl.from;
    h.msg_namelen = sizeof(sl.from);
    h.msg_iov = &sl.iov;
    h.msg_iovlen = 1;
    h.msg_control = sl.control.data();
    h.msg_controllen = sl.control.size();
  }
  const int n = ::recvmmsg(fd_, msgs_.data(), kBatch, MSG_DONTWAIT, nullptr);
  ++stats_.rx_calls;
  if (n <= 0) {
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ++stats_.rx_errors;
    return 0;
  }
  for (int i = 0; i < n; ++i) {
    stats_.rx_bytes += msgs_[i].msg_len;
    if (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) {
      ++stats_.rx_truncated;
      msgs_[i].msg_len = 0;  // a cut datagram is not delivered
    }
  }
  return size_t(n);
}

UdpSocket::RxInfo UdpSocket::Info(size_t i) const {
  const Slot& sl = slots_[i];
  const msghdr& h = msgs_[i].msg_hdr;
  RxInfo info;
  info.len = msgs_[i].msg_len;
  info.segment = info.len;
  std::memcpy(&info.path.remote.storage, &sl.from, h.msg_namelen);
  info.path.remote.len = h.msg_namelen;
  info.path.local = local_;
  for (cmsghdr* c = CMSG_FIRSTHDR(const_cast<msghdr*>(&h)); c;
       c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
      int seg;
      std::memcpy(&seg, CMSG_DATA(c), sizeof(seg));
      if (seg > 0) info.segment = size_t(seg);
    } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      in_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      reinterpret_cast<sockaddr_in*>(&info.path.local.storage)->sin_addr = pi.ipi_addr;
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      in6_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      reinterpret_cast<sockaddr_in6*>(&info.path.local.storage)->sin6_addr = pi.ipi6_addr;
    }
  }
  if (info.segment == 0) info.segment = info.len ? info.len : 1;
  return info;
}

void UdpSocket::Send(const quic::Path& path, std::span<const uint8_t> datagrams, size_t segment) {
  if (datagrams.empty()) return;
  if (segment == 0 || segment > 65000) segment = std::min<size_t>(datagrams.size(), 65000);
  // GSO sends up to 64 segments in one call; without it, one call per datagram.
  const size_t per_call = gso_ ? std::min<size_t>(64, 65000 / segment) * segment : segment;
  for (size_t off = 0; off < datagrams.size(); off += per_call) {
    const size_t len = std::min(per_call, datagrams.size() - off);
    iovec iov{const_cast<uint8_t*>(datagrams.data() + off), len};
    msghdr h{};
    h.msg_name = const_cast<sockaddr*>(path.remote.sa());
    h.msg_namelen = path.remote.len;
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(in6_pktinfo))] = {};
    size_t controllen = 0;
    cmsghdr* c = reinterpret_cast<cmsghdr*>(control);
    if (gso_ && len > segment) {
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const uint16_t seg = uint16_t(segment);
      std::memcpy(CMSG_DATA(c), &seg, sizeof(seg));
      controllen += CMSG_SPACE(sizeof(uint16_t));
      c = reinterpret_cast<cmsghdr*>(control + controllen);
    }
    // Answer from the address the peer used (the socket may be bound to a wildcard).
    if (path.local.storage.ss_family == AF_INET) {
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo pi{};
      pi.ipi_spec_dst = reinterpret_cast<const sockaddr_in*>(&path.local.storage)->sin_addr;
      std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
      controllen += CMSG_SPACE(sizeof(in_pktinfo));
    } else if (path.local.storage.ss_family == AF_INET6) {
      c->cmsg_level = IPPROTO_IPV6;
      c->cmsg_type = IPV6_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
      in6_pktinfo pi{};
      pi.ipi6_addr = reinterpret_cast<const sockaddr_in6*>(&path.local.storage)->sin6_addr;
      std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
      controllen += CMSG_SPACE(sizeof(in6_pktinfo));
    }
    h.msg_control = controllen ? control : nullptr;
    h.msg_controllen = controllen;
    ++stats_.tx_calls;
    const ssize_t n = ::sendmsg(fd_, &h, MSG_DONTWAIT);
    if (n < 0 && errno == EIO && gso_ && len > segment) {
      // The device cannot segment (no checksum offload): fall back to one datagram a call.
      gso_ = false;
      ++stats_.gso_disabled;
      Send(path, datagrams.subspan(off), segment);
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        ++stats_.tx_would_block;
      } else {
        ++stats_.tx_errors;
      }
      return;  // the rest of this batch is dropped; QUIC's loss recovery resends
    }
    stats_.tx_datagrams += (len + segment - 1) / segment;
    stats_.tx_bytes += len;
  }
}

quic::Address KernelSourceFor(const quic::Address& remote) {
  quic::Address out;
  const int fd = ::socket(remote.storage.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return out;
  if (::connect(fd, remote.sa(), remote.len) == 0) {
    out.len = sizeof(out.storage);
    if (::getsockname(fd, out.sa(), &out.len) != 0) out = quic::Address{};
  }
  ::close(fd);
  return out;
}

}  // namespace qbridge::dp
