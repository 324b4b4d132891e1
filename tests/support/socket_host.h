// One appliance on kernel sockets for integration tests: a worker core and the
// controlplane core on their own threads, joined only by rings and activity stamps (as in
// production), serving a UDP socket on loopback.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "controlplane/controlplane.h"
#include "dataplane/socket_io.h"
#include "dataplane/worker/worker.h"

namespace qbridge::testing {

class SocketHost {
 public:
  SocketHost(dp::WorkerConfig wc, cp::ControlplaneConfig cc,
             const quic::Address& bind = quic::Address::FromIpPort("127.0.0.1", 0)) {
    auto s = dp::UdpSocket::Bind(bind);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return;
    socket_ = std::move(*s);
    for (auto& b : wc.bridges) b.local = socket_->local();
    wc.max_conns = activity_.size();
    auto w = dp::Worker::Create(std::move(wc), &rings_, &activity_);
    EXPECT_TRUE(w.ok()) << w.status();
    if (!w.ok()) return;
    worker_ = std::move(*w);
    cp_ = std::make_unique<cp::Controlplane>(std::move(cc), &rings_,
                                             std::vector<dp::ActivityTable*>{&activity_});
    cp_->Start(clock_.Now());
    worker_thread_ = std::thread([this] {
      dp::SocketIo io(*socket_);
      while (!stop_.load(std::memory_order_relaxed)) {
        // Two cores are shared with other tests: nap when idle instead of spinning.
        if (!worker_->PollOnce(io, clock_.Now())) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    cp_thread_ = std::thread([this] {
      while (!stop_.load(std::memory_order_relaxed)) {
        if (!cp_->PollOnce(clock_.Now())) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  ~SocketHost() { Stop(); }

  void Stop() {
    stop_ = true;
    if (worker_thread_.joinable()) worker_thread_.join();
    if (cp_thread_.joinable()) cp_thread_.join();
  }
  bool ok() const { return worker_ && cp_; }
  uint16_t port() const { return ntohs(reinterpret_cast<const sockaddr_in*>(&socket_->local().storage)->sin_port); }
  const quic::Address& address() const { return socket_->local(); }
  // Read these only after Stop() (they belong to the cores' threads), or as estimates.
  dp::Worker& worker() { return *worker_; }
  cp::Controlplane& controlplane() { return *cp_; }

 private:
  dp::SystemClock clock_;
  dp::RingMesh rings_{1};
  dp::ActivityTable activity_{1024};
  std::unique_ptr<dp::UdpSocket> socket_;
  std::unique_ptr<dp::Worker> worker_;
  std::unique_ptr<cp::Controlplane> cp_;
  std::atomic<bool> stop_{false};
  std::thread worker_thread_, cp_thread_;
};

}  // namespace qbridge::testing
