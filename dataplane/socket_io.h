// The kernel UDP backend in the shape the worker's PollOnce expects (Receive(now, fn),
// Send(path, datagrams, segment)): the same worker code runs over it and over DPDK.
#pragma once

#include "dataplane/udp_socket.h"

namespace qbridge::dp {

class SocketIo {
 public:
  explicit SocketIo(UdpSocket& s) : s_(s) {}
  template <typename Fn>
  size_t Receive(uint64_t /*now*/, Fn&& fn) {
    return s_.Receive(fn);
  }
  void Send(const quic::Path& path, std::span<const uint8_t> datagrams, size_t segment) {
    s_.Send(path, datagrams, segment);
  }
  UdpSocket& socket() { return s_; }

 private:
  UdpSocket& s_;
};

}  // namespace qbridge::dp
