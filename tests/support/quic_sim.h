// A deterministic in-process network for QUIC tests: one client Connection and one
// ServerEndpoint joined by a link with a manual clock and seeded delay, jitter (which
// reorders), loss and duplication. No kernel, no real time: a run is a pure function of
// its seed.
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <vector>

#include "quic/connection.h"
#include "quic/endpoint.h"

namespace qbridge::testing {

struct LinkConfig {
  uint64_t delay_ns = 5 * quic::kMillisecond;  // one way
  uint64_t jitter_ns = 0;                      // extra uniform delay: reorders packets
  double loss = 0;                             // probability a datagram is dropped
  double duplicate = 0;                        // probability a datagram is delivered twice
  // Serialisation rate of each direction in bits/s (0: infinite) and its queue; a
  // datagram arriving at a full queue is dropped, as at a real bottleneck.
  uint64_t bandwidth_bps = 0;
  uint64_t queue_bytes = 1 << 20;
  // The clock advances at least this much per step, so each side handles a burst of
  // datagrams per wake-up as a poll loop does (0: step to the very next event).
  uint64_t min_step_ns = 0;
  uint32_t seed = 1;
};

class QuicSim {
 public:
  enum class Side { kToServer, kToClient };

  explicit QuicSim(LinkConfig link = {}) : link_(link), rng_(link.seed) {
    client_addr_ = quic::Address::FromIpPort("198.18.0.1", 50000);
    server_addr_ = quic::Address::FromIpPort("198.18.0.2", 14567);
    scratch_.resize(64 * 1500);
  }

  quic::Timestamp now() const { return now_; }
  quic::Path ClientPath() const { return {client_addr_, server_addr_}; }
  quic::Path ServerPath() const { return {server_addr_, client_addr_}; }
  void set_client_addr(const quic::Address& a) { client_addr_ = a; }
  LinkConfig& link() { return link_; }

  quic::Connection* client = nullptr;
  quic::ServerEndpoint* server = nullptr;

  // Optional hook on every datagram before the link: return false to drop it.
  std::function<bool(Side, std::vector<uint8_t>&)> filter;
  uint64_t delivered_to_server = 0, delivered_to_client = 0;
  uint64_t dropped = 0;  // by the link: random loss and tail drops

  // Runs until `done()` is true or `limit_ns` of simulated time passed, whichever comes
  // first; returns done(). Every step writes both sides, delivers what is due, runs
  // timers, then jumps the clock to the next event.
  bool RunUntil(const std::function<bool()>& done, uint64_t limit_ns) {
    const quic::Timestamp end = now_ + limit_ns;
    for (int guard = 0; guard < 2'000'000; ++guard) {
      if (done()) return true;
      WriteAll();
      DeliverDue();
      if (done()) return true;
      if (client && client->Expiry() <= now_) client->HandleExpiry(now_);
      if (server && server->Expiry() <= now_) server->HandleExpiry(now_);
      WriteAll();
      quic::Timestamp next = end;
      if (!queue_.empty()) next = std::min(next, queue_.top().at);
      if (client) next = std::min(next, client->Expiry());
      if (server) next = std::min(next, server->Expiry());
      if (next >= end) {
        now_ = end;
        DeliverDue();
        return done();
      }
      now_ = std::max({now_, next, now_ + link_.min_step_ns});
    }
    return done();
  }

  void Advance(uint64_t ns) { now_ += ns; }

  // What the server sends goes onto the link towards the client.
  auto ServerEmit() {
    return [this](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
      Enqueue(Side::kToClient, quic::Path{p.remote, p.local}, d, seg);
    };
  }

  // Injects a raw datagram towards the server (hostile-input tests).
  void InjectToServer(std::vector<uint8_t> bytes, const quic::Address& from) {
    server->Receive({server_addr_, from}, bytes, now_, ServerEmit());
  }

  std::vector<std::vector<uint8_t>> client_inbox_raw;  // replies to injected datagrams

 private:
  // Datagrams in flight live in a pool of fixed slots, so the link allocates nothing per
  // packet once warm (it is in the benchmarks' measured path).
  static constexpr size_t kSlotBytes = 1500;
  struct InFlight {
    quic::Timestamp at;
    uint64_t seq;
    Side side;
    uint32_t slot;
    uint16_t len;
    uint16_t path;  // index into paths_: the path as the receiver sees it
    bool operator>(const InFlight& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  uint16_t PathId(const quic::Path& p) {
    for (size_t i = 0; i < paths_.size(); ++i)
      if (paths_[i].local == p.local && paths_[i].remote == p.remote) return uint16_t(i);
    paths_.push_back(p);
    return uint16_t(paths_.size() - 1);
  }
  uint32_t TakeSlot() {
    if (free_.empty()) {
      pool_.emplace_back();
      return uint32_t(pool_.size() - 1);
    }
    const uint32_t s = free_.back();
    free_.pop_back();
    return s;
  }

  void WriteAll() {
    if (client) {
      client->Write(now_, scratch_, 64, [this](const quic::Path& p, std::span<const uint8_t> d,
                                               size_t seg) {
        Enqueue(Side::kToServer, quic::Path{p.remote, p.local}, d, seg);
      });
    }
    if (server) server->WriteAll(now_, scratch_, 64, ServerEmit());
  }

  void Enqueue(Side side, const quic::Path& rx_path, std::span<const uint8_t> d, size_t seg) {
    for (size_t off = 0; off < d.size(); off += seg) {
      std::span<const uint8_t> one = d.subspan(off, std::min(seg, d.size() - off));
      std::vector<uint8_t> edited;
      if (filter) {
        edited.assign(one.begin(), one.end());
        if (!filter(side, edited)) continue;
        one = edited;
      }
      if (one.size() > kSlotBytes) continue;  // larger than any link MTU here
      std::uniform_real_distribution<double> u(0, 1);
      if (link_.loss > 0 && u(rng_) < link_.loss) {
        ++dropped;
        continue;
      }
      const int copies = link_.duplicate > 0 && u(rng_) < link_.duplicate ? 2 : 1;
      for (int i = 0; i < copies; ++i) {
        uint64_t jitter = link_.jitter_ns ? rng_() % link_.jitter_ns : 0;
        if (link_.bandwidth_bps) {
          // The datagram waits for the bottleneck, then takes len*8/rate to cross it.
          quic::Timestamp& free_at = side == Side::kToServer ? up_free_at_ : down_free_at_;
          const quic::Timestamp start = std::max(now_, free_at);
          const uint64_t backlog_bytes = (start - now_) * link_.bandwidth_bps / 8'000'000'000;
          if (backlog_bytes > link_.queue_bytes) {  // tail drop
            ++dropped;
            continue;
          }
          free_at = start + one.size() * 8'000'000'000 / link_.bandwidth_bps;
          jitter += free_at - now_;
        }
        const uint32_t slot = TakeSlot();
        std::memcpy(pool_[slot].data(), one.data(), one.size());
        queue_.push(InFlight{now_ + link_.delay_ns + jitter, seq_++, side, slot,
                             uint16_t(one.size()), PathId(rx_path)});
      }
    }
  }

  void DeliverDue() {
    while (!queue_.empty() && queue_.top().at <= now_) {
      const InFlight f = queue_.top();
      queue_.pop();
      const std::span<const uint8_t> bytes(pool_[f.slot].data(), f.len);
      const quic::Path& path = paths_[f.path];
      if (f.side == Side::kToServer) {
        if (server) {
          ++delivered_to_server;
          server->Receive(path, bytes, now_, ServerEmit());
        }
      } else {
        ++delivered_to_client;
        // The client receives on its own address; a datagram for an old address is lost.
        if (!client || !(path.local == client_addr_)) {
          client_inbox_raw.emplace_back(bytes.begin(), bytes.end());
        } else {
          client->Read(path, bytes, now_);
        }
      }
      free_.push_back(f.slot);
    }
  }

  LinkConfig link_;
  std::mt19937 rng_;
  quic::Timestamp now_ = 1'000'000'000;
  quic::Timestamp up_free_at_ = 0, down_free_at_ = 0;
  uint64_t seq_ = 0;
  quic::Address client_addr_, server_addr_;
  std::priority_queue<InFlight, std::vector<InFlight>, std::greater<>> queue_;
  std::vector<std::array<uint8_t, kSlotBytes>> pool_;
  std::vector<uint32_t> free_;
  std::vector<quic::Path> paths_;
  std::vector<uint8_t> scratch_;
};

}  // namespace qbridge::testing
