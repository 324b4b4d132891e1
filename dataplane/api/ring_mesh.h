// Every ring between the cores of one appliance: one SPSC ring per ordered pair among the
// worker cores and the controlplane (which takes the last index). Built once at start-up.
#pragma once

#include <memory>
#include <vector>

#include "dataplane/api/msg.h"
#include "dataplane/api/ring.h"

namespace qbridge::dp {

using MsgRing = SpscRing<Msg>;

class RingMesh {
 public:
  // 2048 messages per ring: a burst of control packets from thousands of connections
  // reconnecting at once still fits; beyond that senders hold back or drop and count.
  static constexpr size_t kDefaultCapacity = 2048;

  explicit RingMesh(size_t workers, size_t capacity = kDefaultCapacity) : n_(workers + 1) {
    rings_.reserve(n_ * n_);
    for (size_t i = 0; i < n_ * n_; ++i) rings_.push_back(std::make_unique<MsgRing>(capacity));
  }
  ~RingMesh() {
    // Messages still queued own heap blocks.
    Msg m;
    for (auto& r : rings_)
      while (r->DequeueBurst(std::span<Msg>(&m, 1)) == 1) ReleaseMsg(m);
  }

  size_t workers() const { return n_ - 1; }
  size_t cp() const { return n_ - 1; }
  MsgRing& ring(size_t from, size_t to) { return *rings_[from * n_ + to]; }

 private:
  size_t n_;
  std::vector<std::unique_ptr<MsgRing>> rings_;
};

}  // namespace qbridge::dp
