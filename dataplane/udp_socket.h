// The kernel UDP backend: a non-blocking socket with GSO (UDP_SEGMENT) on send, GRO
// (UDP_GRO) and recvmmsg on receive, and IP_PKTINFO so a socket bound to a wildcard
// address still learns, and answers from, the exact local address each datagram used
// (ngtcp2 treats another local address as another path). For non-root use and as the
// baseline the DPDK backend is measured against.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "quic/connection.h"

namespace qbridge::dp {

struct UdpOptions {
  bool gso = true;
  bool gro = true;
  int rcvbuf = 4 << 20;
  int sndbuf = 4 << 20;
  // Several sockets (one per worker) share the address; the kernel spreads flows by hash.
  bool reuseport = false;
};

#define QBRIDGE_UDP_COUNTERS(X) \
  X(rx_calls)                   \
  X(rx_datagrams)               \
  X(rx_bytes)                   \
  X(rx_truncated)               \
  X(rx_errors)                  \
  X(tx_calls)                   \
  X(tx_datagrams)               \
  X(tx_bytes)                   \
  X(tx_errors)                  \
  X(tx_would_block)             \
  X(gso_disabled)

struct UdpStats {
#define QBRIDGE_X(name) uint64_t name = 0;
  QBRIDGE_UDP_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X
};

// The source address the kernel would use towards `remote` now (a connect() on a scratch
// socket, nothing sent); empty when it has no route.
quic::Address KernelSourceFor(const quic::Address& remote);

class UdpSocket {
 public:
  static constexpr size_t kBatch = 32;          // messages per recvmmsg
  static constexpr size_t kBufSize = 64 * 1024; // one GRO super-datagram at most

  static absl::StatusOr<std::unique_ptr<UdpSocket>> Bind(const quic::Address& local,
                                                         UdpOptions options = {});
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  int fd() const { return fd_; }
  const quic::Address& local() const { return local_; }
  bool gso() const { return gso_; }
  const UdpStats& stats() const { return stats_; }

  // Receives what is queued (up to kBatch messages, without blocking) and calls
  // fn(const quic::Path&, std::span<const uint8_t> datagram) for each datagram, GRO
  // super-datagrams split at their segment size. Returns the number of datagrams.
  template <typename Fn>
  size_t Receive(Fn&& fn);

  // Sends datagrams laid back to back, each `segment` bytes but the last, to
  // path.remote from path.local: one sendmsg with UDP_SEGMENT when GSO is on, one per
  // datagram otherwise. A full socket buffer drops the rest (counted): QUIC retransmits.
  void Send(const quic::Path& path, std::span<const uint8_t> datagrams, size_t segment);

 private:
  explicit UdpSocket(int fd) : fd_(fd) {}
  size_t ReceiveBatch();  // fills msgs_; returns the number of messages

  struct Slot {
    std::array<uint8_t, kBufSize> buf;
    sockaddr_storage from;
    alignas(cmsghdr) std::array<uint8_t, 128> control;
    iovec iov;
  };

  int fd_;
  quic::Address local_;
  bool gso_ = false;
  bool gro_ = false;
  std::vector<Slot> slots_;
  std::vector<mmsghdr> msgs_;
  UdpStats stats_;

 public:
  // Parsed receive metadata of message i of the last batch.
  struct RxInfo {
    quic::Path path;
    size_t len;
    size_t segment;  // GRO segment size, or len
  };
  RxInfo Info(size_t i) const;
  const uint8_t* Data(size_t i) const { return slots_[i].buf.data(); }
};

template <typename Fn>
size_t UdpSocket::Receive(Fn&& fn) {
  const size_t n = ReceiveBatch();
  size_t datagrams = 0;
  for (size_t i = 0; i < n; ++i) {
    const RxInfo info = Info(i);
    const uint8_t* p = Data(i);
    for (size_t off = 0; off < info.len; off += info.segment) {
      const size_t len = std::min(info.segment, info.len - off);
      fn(info.path, std::span<const uint8_t>(p + off, len));
      ++datagrams;
    }
  }
  stats_.rx_datagrams += datagrams;
  return datagrams;
}

}  // namespace qbridge::dp
