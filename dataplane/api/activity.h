// Per-connection activity stamps, one table per worker: the worker is the only writer
// (relaxed stores, no message per packet); the controlplane reads them when a keepalive
// deadline fires and re-arms lazily (architecture.md, "Keepalive").
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "dataplane/api/time.h"

namespace qbridge::dp {

struct ConnActivity {
  std::atomic<MonoNs> last_rx{0};            // any MQTT packet received, any stream
  std::atomic<MonoNs> last_rx_control{0};    // an MQTT packet received on the control stream
  std::atomic<MonoNs> last_tx_control{0};    // an MQTT packet queued on the control stream
  std::atomic<MonoNs> last_control_wire{0};  // control-stream bytes handed to the wire

  static void Stamp(std::atomic<MonoNs>& a, MonoNs now) { a.store(now, std::memory_order_relaxed); }
  static MonoNs Read(const std::atomic<MonoNs>& a) { return a.load(std::memory_order_relaxed); }
  void Reset(MonoNs now) {
    Stamp(last_rx, now);
    Stamp(last_rx_control, now);
    Stamp(last_tx_control, now);
    Stamp(last_control_wire, now);
  }
};

class ActivityTable {
 public:
  explicit ActivityTable(size_t slots) : n_(slots), a_(std::make_unique<ConnActivity[]>(slots)) {}
  size_t size() const { return n_; }
  ConnActivity& at(uint32_t slot) { return a_[slot]; }
  const ConnActivity& at(uint32_t slot) const { return a_[slot]; }

 private:
  size_t n_;
  std::unique_ptr<ConnActivity[]> a_;
};

}  // namespace qbridge::dp
