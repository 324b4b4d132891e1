// A deterministic in-process network for whole-appliance tests (the shape of ngtcp2's
// examples/sim): addresses with ports, a manual clock, per-direction delay, bandwidth with
// a tail-drop queue, and a filter hook (black-holing a direction, say). Nodes are polled
// like cores: every node runs its loop body until all are quiet, then the clock jumps to
// the next delivery or deadline (at least min_step). No kernel, no real time.
#pragma once

#include <algorithm>
#include <array>
#include <deque>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <vector>

#include "controlplane/controlplane.h"
#include "dataplane/worker/worker.h"
#include "quic/connection.h"

namespace qbridge::testing {

class SimNet {
 public:
  struct Link {
    uint64_t delay_ns = 5 * quic::kMillisecond;
    uint64_t bandwidth_bps = 0;  // 0: unlimited
    uint64_t queue_bytes = 256 * 1024;
    double loss = 0;
  };

  // One address's packet I/O, in the shape the worker's PollOnce expects.
  class Port {
   public:
    Port(SimNet* net, quic::Address addr) : net_(net), addr_(addr) {}
    const quic::Address& address() const { return addr_; }
    template <typename Fn>
    size_t Receive(uint64_t now, Fn&& fn) {
      size_t n = 0;
      while (!inbox_.empty() && inbox_.front().at <= now) {
        const Pending p = std::move(inbox_.front());
        inbox_.pop_front();
        fn(quic::Path{addr_, p.from}, std::span<const uint8_t>(p.bytes));
        ++n;
      }
      return n;
    }
    void Send(const quic::Path& path, std::span<const uint8_t> d, size_t seg) {
      const uint64_t before = net_->meter ? net_->meter() : 0;
      for (size_t off = 0; off < d.size(); off += seg) {
        net_->Enqueue(addr_, path.remote, d.subspan(off, std::min(seg, d.size() - off)));
      }
      if (net_->meter) net_->link_metered += net_->meter() - before;
    }

   private:
    friend class SimNet;
    struct Pending {
      uint64_t at;
      quic::Address from;
      std::vector<uint8_t> bytes;
    };
    SimNet* net_;
    quic::Address addr_;
    std::deque<Pending> inbox_;  // in delivery order
  };

  struct Node {
    std::function<bool(uint64_t)> poll;   // true when it did work
    std::function<uint64_t()> deadline;   // next timer, or quic::kNever
  };

  explicit SimNet(uint64_t min_step_ns = quic::kMillisecond, uint32_t seed = 1)
      : min_step_(min_step_ns), rng_(seed) {}

  uint64_t now() const { return now_; }
  Port& AddPort(const quic::Address& a) {
    ports_.push_back(std::make_unique<Port>(this, a));
    return *ports_.back();
  }
  void AddNode(Node n) { nodes_.push_back(std::move(n)); }
  // The link from `a` to `b` (defaults apply until set).
  Link& link(const quic::Address& a, const quic::Address& b) { return dirs_[Key(a, b)].link; }
  // A bottleneck from a to b: `bps`, with a queue of `queue_bytes` beyond which it drops.
  void Bottleneck(const quic::Address& a, const quic::Address& b, uint64_t bps, uint64_t queue_bytes) {
    Link& l = link(a, b);
    l.bandwidth_bps = bps;
    l.queue_bytes = queue_bytes;
  }
  // Return false to drop a datagram from `from` to `to`.
  std::function<bool(const quic::Address& from, const quic::Address& to)> filter;
  uint64_t dropped = 0;
  // A counter read around every appliance's worker iteration and every link send, set by
  // tests and benchmarks that measure the workers alone: the thread's allocations
  // (tests/support/alloc_count.h) or its CPU time. The links' share is kept apart so that
  // appliances can leave it out of theirs.
  uint64_t (*meter)() = nullptr;
  uint64_t link_metered = 0;

  // Steps until done() or `limit_ns` of simulated time; returns done().
  bool RunUntil(const std::function<bool()>& done, uint64_t limit_ns) {
    const uint64_t end = now_ + limit_ns;
    while (true) {
      for (int round = 0; round < 16; ++round) {
        bool any = false;
        for (Node& n : nodes_) any |= n.poll(now_);
        if (!any) break;
      }
      if (done()) return true;
      if (now_ >= end) return false;
      uint64_t next = end;
      for (auto& p : ports_)
        if (!p->inbox_.empty()) next = std::min(next, p->inbox_.front().at);
      for (Node& n : nodes_) next = std::min(next, n.deadline());
      now_ = std::min(end, std::max(next, now_ + min_step_));
    }
  }

 private:
  struct Dir {
    Link link;
    uint64_t free_at = 0;
  };
  static std::string Key(const quic::Address& a, const quic::Address& b) {
    return a.ToString() + ">" + b.ToString();
  }

  void Enqueue(const quic::Address& from, const quic::Address& to, std::span<const uint8_t> d) {
    if (filter && !filter(from, to)) {
      ++dropped;
      return;
    }
    Dir& dir = dirs_[Key(from, to)];
    std::uniform_real_distribution<double> u(0, 1);
    if (dir.link.loss > 0 && u(rng_) < dir.link.loss) {
      ++dropped;
      return;
    }
    uint64_t at = now_ + dir.link.delay_ns;
    if (dir.link.bandwidth_bps) {
      const uint64_t start = std::max(now_, dir.free_at);
      const uint64_t backlog = (start - now_) * dir.link.bandwidth_bps / 8'000'000'000;
      if (backlog > dir.link.queue_bytes) {
        ++dropped;
        return;
      }
      dir.free_at = start + d.size() * 8'000'000'000 / dir.link.bandwidth_bps;
      at = dir.free_at + dir.link.delay_ns;
    }
    for (auto& p : ports_) {
      if (p->addr_ == to) {
        auto& box = p->inbox_;
        Port::Pending pend{at, from, std::vector<uint8_t>(d.begin(), d.end())};
        auto pos = std::upper_bound(box.begin(), box.end(), at,
                                    [](uint64_t t, const Port::Pending& x) { return t < x.at; });
        box.insert(pos, std::move(pend));
        return;
      }
    }
    ++dropped;  // nobody at that address
  }

  uint64_t now_ = quic::kSecond;
  uint64_t min_step_;
  std::mt19937 rng_;
  std::vector<std::unique_ptr<Port>> ports_;
  std::vector<Node> nodes_;
  std::map<std::string, Dir> dirs_;
};

// One appliance in the simulation: worker cores (each with its own address, as the socket
// backend's workers have their own sockets) and the controlplane, wired by rings, polled as
// separate cores. `worker` and `port` name the first worker's.
struct SimAppliance {
  dp::RingMesh rings;
  std::vector<std::unique_ptr<dp::ActivityTable>> activity;
  std::vector<std::unique_ptr<dp::Worker>> workers;
  std::unique_ptr<dp::Worker>& worker;
  std::unique_ptr<cp::Controlplane> cp;
  std::vector<SimNet::Port*> ports;
  SimNet::Port* port = nullptr;
  // What SimNet::meter counted inside this appliance's worker iterations (the links' own
  // share left out).
  uint64_t worker_metered = 0;

  SimAppliance(SimNet& net, const quic::Address& addr, dp::WorkerConfig wc, cp::ControlplaneConfig cc)
      : SimAppliance(net, std::vector<quic::Address>{addr}, std::vector<dp::WorkerConfig>{std::move(wc)},
                     std::move(cc)) {}

  // One worker per address and config (core numbers are filled in).
  SimAppliance(SimNet& net, const std::vector<quic::Address>& addrs, std::vector<dp::WorkerConfig> wcs,
               cp::ControlplaneConfig cc)
      : rings(addrs.size()), workers(addrs.size()), worker(workers[0]), net_(&net) {
    std::vector<dp::ActivityTable*> tables;
    for (size_t i = 0; i < addrs.size(); ++i) {
      activity.push_back(std::make_unique<dp::ActivityTable>(256));
      tables.push_back(activity.back().get());
      wcs[i].max_conns = 256;
      wcs[i].core = uint16_t(i);
      auto w = dp::Worker::Create(std::move(wcs[i]), &rings, tables.back());
      EXPECT_TRUE(w.ok()) << w.status();
      if (w.ok()) workers[i] = std::move(*w);
    }
    cc.seed = cc.seed ? cc.seed : 7;
    cp = std::make_unique<cp::Controlplane>(std::move(cc), &rings, tables);
    for (size_t i = 0; i < addrs.size(); ++i) {
      ports.push_back(&net.AddPort(addrs[i]));
      dp::Worker* w = workers[i].get();
      SimNet::Port* p = ports.back();
      net.AddNode({[this, w, p](uint64_t now) {
                     uint64_t (*meter)() = net_->meter;
                     const uint64_t before = meter ? meter() - net_->link_metered : 0;
                     const bool busy = w->PollOnce(*p, now);
                     if (meter) worker_metered += meter() - net_->link_metered - before;
                     return busy;
                   },
                   [w] { return w->NextDeadline(); }});
    }
    port = ports[0];
    net.AddNode({[this](uint64_t now) { return cp->PollOnce(now); },
                 [this] { return cp->NextDeadline(); }});
  }
  SimAppliance(const SimAppliance&) = delete;
  SimAppliance& operator=(const SimAppliance&) = delete;

 private:
  SimNet* net_;
};

}  // namespace qbridge::testing
