// Neighbour resolution on one core, for IPv4 (ARP, RFC 826) and, keyed by Ipv6, for IPv6
// (NDP's neighbour cache, RFC 4861 7.3, without its probe states): resolved entries with ageing,
// unresolved ones with a bounded queue of packets waiting for the answer and a bounded
// number of retries. Nothing here sends: the caller writes the ARP requests it is told
// to, and owns the packets (`P`, an mbuf pointer in the dataplane) it gets back.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "dataplane/net/headers.h"

namespace qbridge::dp::net {

struct ArpConfig {
  size_t max_entries = 4096;
  uint64_t retry_ns = 1'000'000'000;       // between requests for an unresolved address
  int max_requests = 3;                    // then the address is unreachable
  uint64_t reachable_ns = 30'000'000'000;  // a learned MAC is trusted this long...
  uint64_t stale_ns = 300'000'000'000;     // ...then used while re-asked, dropped after this
  // Packets held for unresolved neighbours across the whole table: spoofed sources must
  // not drain the mbuf pool that RX needs.
  size_t max_queued_total = 256;
};

template <typename P, size_t kMaxPending = 4, typename Key = Ipv4>
class ArpCache {
 public:
  enum class Result : uint8_t { kResolved, kQueued, kDropped };

  explicit ArpCache(ArpConfig config = {}) : config_(config) { table_.reserve(config.max_entries); }

  // Where to send a packet for next hop `ip`. kResolved: *mac is set, `pkt` stays the
  // caller's. kQueued: the cache holds `pkt` until the answer (or gives it back to the
  // drop function of Expire). kDropped: the queue or the table is full; `pkt` stays the
  // caller's to free. *send_request says whether to send an ARP request now.
  Result Resolve(const Key& ip, uint64_t now, P& pkt, Mac* mac, bool* send_request) {
    *send_request = false;
    auto it = table_.find(ip);
    if (it == table_.end()) {
      if (table_.size() >= config_.max_entries) return Result::kDropped;
      it = table_.emplace(ip, Entry{}).first;
      Entry& e = it->second;
      e.state = State::kIncomplete;
      e.requested_at = now;
      e.requests = 1;
      *send_request = true;
    }
    Entry& e = it->second;
    if (e.state != State::kIncomplete) {
      *mac = e.mac;
      e.used_at = now;
      if (e.state == State::kReachable && now - e.learned_at >= config_.reachable_ns) {
        e.state = State::kStale;  // keep using it, but confirm it
        e.requested_at = now;
        e.requests = 1;
        *send_request = true;
      }
      return Result::kResolved;
    }
    if (e.pending_count == kMaxPending || queued_ >= config_.max_queued_total) return Result::kDropped;
    e.pending[e.pending_count++] = std::move(pkt);
    ++queued_;
    return Result::kQueued;
  }

  // Whether `ip` has a usable MAC, without a packet to queue: an unknown address gets an
  // incomplete entry (*send_request: ask now), so the answer is waited for, retried and
  // given up on as for a queued packet.
  bool Ready(const Key& ip, uint64_t now, bool* send_request) {
    *send_request = false;
    auto it = table_.find(ip);
    if (it == table_.end()) {
      if (table_.size() >= config_.max_entries) return false;
      Entry& e = table_.emplace(ip, Entry{}).first->second;
      e.state = State::kIncomplete;
      e.requested_at = now;
      e.requests = 1;
      *send_request = true;
      return false;
    }
    return it->second.state != State::kIncomplete;
  }

  // An ARP packet from `ip` said it is at `mac`. Existing entries are updated; a new one
  // is made only when `create` (the packet was for us, RFC 826's merge rule). Packets
  // waiting for `ip` are handed to release(P&&, const Mac&), in order.
  template <typename Fn>
  void Learn(const Key& ip, const Mac& mac, uint64_t now, bool create, Fn&& release) {
    auto it = table_.find(ip);
    if (it == table_.end()) {
      if (!create || table_.size() >= config_.max_entries) return;
      it = table_.emplace(ip, Entry{}).first;
      it->second.used_at = now;
    }
    Entry& e = it->second;
    e.state = State::kReachable;
    e.mac = mac;
    e.learned_at = now;
    for (size_t i = 0; i < e.pending_count; ++i) release(std::move(e.pending[i]), mac);
    queued_ -= e.pending_count;
    e.pending_count = 0;
  }

  // Runs timers: re-requests (request(const Key&)), gives up on unresolved addresses after
  // max_requests (drop(P&&) for each packet that waited), forgets stale unused entries.
  template <typename Req, typename DropFn>
  void Expire(uint64_t now, Req&& request, DropFn&& drop) {
    for (auto it = table_.begin(); it != table_.end();) {
      Entry& e = it->second;
      bool erase = false;
      if (e.state == State::kIncomplete || e.state == State::kStale) {
        if (now - e.requested_at >= config_.retry_ns) {
          if (e.requests >= config_.max_requests) {
            erase = true;
          } else {
            ++e.requests;
            e.requested_at = now;
            request(it->first);
          }
        }
      } else if (now - e.learned_at >= config_.reachable_ns && now - e.used_at >= config_.stale_ns) {
        erase = true;  // not used for a long time: forget it rather than re-ask
      }
      if (erase) {
        for (size_t i = 0; i < e.pending_count; ++i) drop(std::move(e.pending[i]));
        queued_ -= e.pending_count;
        table_.erase(it++);
      } else {
        ++it;
      }
    }
  }

  // Forgets everything, handing every held packet to drop(P&&) (shutdown).
  template <typename DropFn>
  void Clear(DropFn&& drop) {
    for (auto& [ip, e] : table_)
      for (size_t i = 0; i < e.pending_count; ++i) drop(std::move(e.pending[i]));
    table_.clear();
    queued_ = 0;
  }

  size_t size() const { return table_.size(); }
  size_t queued() const { return queued_; }
  bool Has(const Key& ip) const { return table_.contains(ip); }

 private:
  enum class State : uint8_t { kIncomplete, kReachable, kStale };
  struct Entry {
    State state = State::kIncomplete;
    Mac mac{};
    uint64_t learned_at = 0, used_at = 0, requested_at = 0;
    int requests = 0;
    std::array<P, kMaxPending> pending{};
    size_t pending_count = 0;
  };

  ArpConfig config_;
  absl::flat_hash_map<Key, Entry> table_;
  size_t queued_ = 0;
};

// IPv6 neighbours: the same cache keyed by address (an NS is sent where ARP would ask).
template <typename P, size_t kMaxPending = 4>
using NeighbourCache = ArpCache<P, kMaxPending, Ipv6>;

// Static IPv4 routes with a default gateway: longest prefix wins.
class RouteTable {
 public:
  // A prefix `dst/len` reached through `gateway` (0: directly connected).
  void Add(Ipv4 dst, uint8_t len, Ipv4 gateway);
  // The next hop for `dst`: the gateway of the longest matching prefix, or `dst` itself
  // on a connected route; false when no route matches.
  bool NextHop(Ipv4 dst, Ipv4* next_hop) const;
  size_t size() const { return routes_.size(); }

 private:
  struct Route {
    Ipv4 dst;
    Ipv4 mask;
    uint8_t len;
    Ipv4 gateway;
  };
  std::vector<Route> routes_;  // longest prefix first
};

}  // namespace qbridge::dp::net
