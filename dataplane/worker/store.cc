// Store-and-forward bridges (docs/store.md): the custody log on the bridge's own worker.
// A QoS 1/2 message for the bridge is appended to the log as the PUBLISH it will send
// (packet id still a placeholder), after a wall-clock stamp; its publisher is acknowledged
// when the group commit that carries it is durable, not when the upstream answers. The
// upstream's PUBACK/PUBCOMP releases the record. On open the log is recovered into the
// bridge's queue, oldest first, each marked DUP (it may have been in flight before).
// A failed commit leaves its messages in memory custody: their publishers hear when the
// upstream acknowledges, as without the store. The bridge's queue keeps the bytes of at
// most store.memory_bytes of stored messages; beyond that, committed messages keep only
// their place in the queue and where they lie in the log, and are read back when their turn
// comes, so a backlog is bounded by the disk (and the caps), not by memory. This file owns
// those rules; bridge.cc calls in where a message enters, is acknowledged, is sent, or leaves
// with a removed bridge.

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "dataplane/worker/conn.h"
#include "dataplane/worker/worker.h"
#include "mqtt/wire.h"

namespace qbridge::dp {
namespace {

constexpr uint64_t kGaugesEveryNs = 100 * kMsNs;  // also how often a held log is tried again
constexpr size_t kStampBytes = 8;  // the wall-clock time a message was stored, before it

// A record's meta: the data slot, the QoS it goes out with, the MQTT version it is encoded in.
uint32_t MetaOf(int slot, uint8_t qos, mqtt::Version v) {
  return uint32_t(uint8_t(int8_t(slot))) | uint32_t(qos & 3) << 8 | uint32_t(uint8_t(v)) << 16;
}

uint64_t WallNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * kSecNs + uint64_t(ts.tv_nsec);
}

// The fixed header's length of stored bytes that are one whole PUBLISH holding its topic and,
// unless it is QoS 0, a packet id after it; 0 for anything else (not written by us, never
// sent: a packet id patched past the end would write out of bounds).
size_t StoredPublishHeader(std::span<const uint8_t> pk, bool qos0) {
  if (pk.empty() || (pk[0] >> 4) != 3) return 0;
  const mqtt::VarIntResult len = mqtt::DecodeVarInt(pk.subspan(1));
  const size_t hdr = 1 + size_t(len.length);
  if (len.status != mqtt::VarIntStatus::kOk || pk.size() != hdr + len.value || len.value < 2) return 0;
  const size_t topic_len = size_t(pk[hdr]) << 8 | pk[hdr + 1];
  return 2 + topic_len + (qos0 ? 0 : 2) <= len.value ? hdr : 0;
}

}  // namespace

absl::Status Worker::OpenStore(uint32_t bridge) {
  const BridgeDial& d = config_.bridges[bridge];
  BridgeState& b = bstate_[bridge];
  BridgeTraffic& bt = bridge_traffic_[bridge];
  const MonoNs mono = SystemClock().Now();
  const uint64_t wall = WallNs();
  uint64_t unusable = 0;
  std::vector<std::pair<uint64_t, size_t>> drop;  // records that cannot be sent again: released
  store::RecoveryStats st;
  auto log = store::Log::Open(
      d.store.log,
      [&](uint64_t seq, uint32_t meta, std::span<const uint8_t> data, const store::Location& where) {
        const std::span<const uint8_t> pk = data.size() > kStampBytes ? data.subspan(kStampBytes) : data.first(0);
        const uint8_t qos = (meta >> 8) & 3;
        const size_t hdr = StoredPublishHeader(pk, qos == 0);
        if (hdr == 0) {
          ++unusable;
          drop.emplace_back(seq, data.size());
          return;
        }
        NorthMsg m;
        m.slot = int(int8_t(meta & 0xff));
        const auto version = mqtt::Version((meta >> 16) & 0xff);
        m.qos0 = qos == 0;
        m.store_seq = seq;
        m.seq = b.seq++;
        uint64_t stamp;
        std::memcpy(&stamp, data.data(), kStampBytes);
        const uint64_t age = wall > stamp ? wall - stamp : 0;
        m.stored_at = mono > age ? mono - age : 0;
        m.loc = where;
        m.recovered = true;
        if (version == d.version) {
          m.durable = true;
          // Beyond the memory budget it stays on disk until its turn comes (LoadStored).
          if (b.resident_bytes + pk.size() <= d.store.memory_bytes) SetStoredPacket(m, pool_.Copy(pk));
        } else {  // the bridge's proto_ver changed since: encode it the new way (kept in memory)
          mqtt::Publish p;
          quic::Buffer again;
          if (!mqtt::DecodePublish(pk[0], pk.subspan(hdr), version, &p).ok() || !(again = Encode(p, d.version))) {
            ++unusable;
            drop.emplace_back(seq, data.size());
            return;
          }
          SetStoredPacket(m, std::move(again));
        }
        Enqueue(bridge, std::move(m));
      },
      &st);
  if (!log.ok()) return log.status();
  b.log = std::move(*log);
  for (const auto& [seq, bytes] : drop) b.log->Release(seq, bytes, mono);
  bt.store_recovered.Inc(st.live - unusable);
  bt.store_truncated_bytes.Inc(st.truncated_bytes);
  if (st.live > 0 || st.truncated_bytes > 0) {
    std::fprintf(stderr,
                 "qbridge: store %s: recovered %llu message%s (%llu bytes) from %llu segment%s%s",
                 d.store.log.dir.c_str(), static_cast<unsigned long long>(st.live - unusable),
                 st.live - unusable == 1 ? "" : "s", static_cast<unsigned long long>(st.live_bytes),
                 static_cast<unsigned long long>(st.segments), st.segments == 1 ? "" : "s",
                 st.truncated_bytes ? "" : "\n");
    if (st.truncated_bytes) {
      std::fprintf(stderr, "; cut %llu torn or corrupted bytes from %llu segment%s (never replayed)\n",
                   static_cast<unsigned long long>(st.truncated_bytes),
                   static_cast<unsigned long long>(st.corrupt_segments), st.corrupt_segments == 1 ? "" : "s");
    }
  }
  if (unusable) {
    std::fprintf(stderr, "qbridge: store %s: %llu record%s not a PUBLISH for this bridge, released\n",
                 d.store.log.dir.c_str(), static_cast<unsigned long long>(unusable), unusable == 1 ? "" : "s");
    bt.drop_not_encodable.Inc(unusable);
  }
  stored_bridges_.push_back(bridge);
  StoreGauges(bridge, mono);
  return absl::OkStatus();
}

bool Worker::StoreNorth(uint32_t bridge, NorthMsg& m, const Origin* origin) {
  BridgeState& b = bstate_[bridge];
  const BridgeDial::Store& s = config_.bridges[bridge].store;
  const size_t size = kStampBytes + m.packet.size();
  // Segments go oldest first only, so a message the upstream never acknowledges keeps the
  // segments after it on disk: their bytes are capped too, at twice store_max_bytes.
  auto full = [&] {
    return b.log->live_records() >= s.max_messages || b.log->live_bytes() + size > s.max_bytes ||
           b.log->disk_bytes() + size > 2 * s.max_bytes;
  };
  // At the cap: a QoS 0 message makes room by dropping the oldest QoS 0 one waiting; QoS 1/2
  // is refused (its publisher gets PUBACK 0x97), never something already acknowledged.
  while (full() && m.qos0 && b.queued_qos0 > 0) {
    auto it = std::find_if(b.queued.begin(), b.queued.end(), [](const NorthMsg& q) { return q.qos0; });
    ReleaseStored(bridge, *it);
    Dequeued(bridge, *it);
    b.queued.erase(it);
    bridge_traffic_[bridge].drop_store_full.Inc();
  }
  if (full()) {
    bridge_traffic_[bridge].drop_store_full.Inc();
    return false;
  }
  uint8_t stamp[kStampBytes];
  const uint64_t wall = WallNs();
  std::memcpy(stamp, &wall, kStampBytes);
  const uint8_t qos = m.qos0 ? 0 : (m.packet[0] >> 1) & 3;
  m.store_seq = b.log->Append(MetaOf(m.slot, qos, config_.bridges[bridge].version), stamp,
                              m.packet.span(), now_, &m.loc);
  m.stored_at = now_;
  if (origin) b.committing.push_back({m.store_seq, *origin});
  return true;
}

void Worker::ReleaseStored(uint32_t bridge, const NorthMsg& m) {
  BridgeState& b = bstate_[bridge];
  if (m.store_seq == 0 || !b.log) return;
  b.log->Release(m.store_seq, m.loc.length, now_);
}

void Worker::Enqueue(uint32_t bridge, NorthMsg&& m) {
  BridgeState& b = bstate_[bridge];
  b.queued_qos0 += m.qos0;
  if (m.store_seq) b.resident_bytes += m.packet.size();
  b.queued.push_back(std::move(m));
}

void Worker::Dequeued(uint32_t bridge, const NorthMsg& m) {
  BridgeState& b = bstate_[bridge];
  b.queued_qos0 -= m.qos0;
  if (m.store_seq) b.resident_bytes -= std::min<uint64_t>(m.packet.size(), b.resident_bytes);
}

// Over the budget, the newest committed messages give up their bytes (they are sent last, so
// the ones about to go stay in memory). Stops at the first message already on disk only: the
// queue is [in memory][on disk only][newest], and only the newest part is looked at.
void Worker::Evict(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  const uint64_t budget = config_.bridges[bridge].store.memory_bytes;
  for (auto it = b.queued.rbegin(); it != b.queued.rend() && b.resident_bytes > budget; ++it) {
    if (!it->packet) break;
    if (!it->durable || it->store_seq == 0) continue;
    b.resident_bytes -= std::min<uint64_t>(it->packet.size(), b.resident_bytes);
    it->packet = quic::Buffer();
  }
}

// A stored message's packet, as SendNorth wants it: the packet id's offset found, and DUP
// set on what an earlier run may have sent.
void Worker::SetStoredPacket(NorthMsg& m, quic::Buffer packet) {
  m.packet = std::move(packet);
  if (m.qos0) return;
  const size_t hdr = StoredPublishHeader(m.packet.span(), false);  // checked when it was read
  const size_t topic_len = size_t(m.packet[hdr]) << 8 | m.packet[hdr + 1];
  m.id_offset = PacketIdOffset(m.packet, topic_len);
  if (m.recovered) m.packet.mutable_span()[0] |= 0x08;
}

bool Worker::LoadStored(uint32_t bridge, NorthMsg& m) {
  BridgeState& b = bstate_[bridge];
  absl::StatusOr<std::span<const uint8_t>> data =
      b.log ? b.log->Read(m.loc, m.store_seq) : absl::FailedPreconditionError("store: closed");
  const std::span<const uint8_t> pk =
      data.ok() && data->size() > kStampBytes ? data->subspan(kStampBytes) : std::span<const uint8_t>();
  if (StoredPublishHeader(pk, m.qos0) == 0) {
    BridgeTraffic& bt = bridge_traffic_[bridge];
    bt.drop_store_lost.Inc();
    const uint64_t n = bt.drop_store_lost.Get();
    if (n <= 3 || n % 1000 == 0) {
      std::fprintf(stderr, "qbridge: store %s: message %llu cannot be read back (%s); %llu lost so far\n",
                   config_.bridges[bridge].store.log.dir.c_str(), static_cast<unsigned long long>(m.store_seq),
                   data.ok() ? "not a PUBLISH" : std::string(data.status().message()).c_str(),
                   static_cast<unsigned long long>(n));
    }
    ReleaseStored(bridge, m);
    return false;
  }
  SetStoredPacket(m, pool_.Copy(pk));
  b.resident_bytes += m.packet.size();
  return true;
}

bool Worker::PollStores(MonoNs now) {
  bool any = false;
  if (!store_retry_.empty() && now - store_retry_at_ >= kGaugesEveryNs) {
    store_retry_at_ = now;
    for (size_t i = 0; i < store_retry_.size();) {
      const auto [bridge, give_up] = store_retry_[i];
      absl::Status s = bstate_[bridge].removed ? absl::CancelledError("removed") : OpenStore(bridge);
      if (s.ok() || now >= give_up || s.code() != absl::StatusCode::kFailedPrecondition) {
        if (!s.ok() && !bstate_[bridge].removed) {
          std::fprintf(stderr, "qbridge: %s: gave up; the bridge keeps memory custody until a restart\n",
                       std::string(s.message()).c_str());
          bridge_traffic_[bridge].store_io_errors.Inc();
        }
        store_retry_.erase(store_retry_.begin() + ptrdiff_t(i));
        any = true;
        continue;
      }
      ++i;
    }
  }
  for (uint32_t i : stored_bridges_) {
    store::Commit c;
    if (bstate_[i].log->Poll(now, &c)) {
      OnCommit(i, c);
      any = true;
    }
    // Stored QoS 0 at the head waits for its slot to drain (SendNorth), which no ack
    // announces: look again each iteration.
    const BridgeState& b = bstate_[i];
    if (b.ready && !b.queued.empty() && b.queued.front().qos0 && !NorthSlotFull(i, b.queued.front().slot)) {
      DrainNorthQueue(i);
    }
  }
  if (now - store_gauges_at_ >= kGaugesEveryNs) {
    store_gauges_at_ = now;
    for (uint32_t i : stored_bridges_) StoreGauges(i, now);
  }
  return any;
}

void Worker::OnCommit(uint32_t bridge, const store::Commit& c) {
  BridgeState& b = bstate_[bridge];
  if (c.error) {
    const uint64_t n = b.log->stats().io_errors.load(std::memory_order_relaxed);
    if (n <= 3 || n % 1000 == 0) {  // the first ones, then one line per thousand
      std::fprintf(stderr,
                   "qbridge: store %s: commit failed (%s, %llu so far): its messages stay in memory "
                   "and are acknowledged when the upstream acknowledges them\n",
                   config_.bridges[bridge].store.log.dir.c_str(), std::strerror(c.error),
                   static_cast<unsigned long long>(n));
    }
  }
  if (c.error == 0 && c.last_seq >= c.first_seq) {
    // Committed: what is still queued may give up its bytes (the newest are at the back).
    for (auto it = b.queued.rbegin(); it != b.queued.rend() && it->store_seq >= c.first_seq; ++it) {
      if (it->store_seq <= c.last_seq) it->durable = true;
    }
    Evict(bridge);
  }
  while (!b.committing.empty() && b.committing.front().first <= c.last_seq) {
    const auto [seq, origin] = b.committing.front();
    b.committing.pop_front();
    if (c.error == 0) {
      AckOrigin(origin, /*failed=*/false);
      continue;
    }
    // Not durable: custody falls back to memory, and the publisher waits for the upstream.
    // The queue is in sequence order and this commit's messages are its newest; what is not
    // queued any more is in flight, or the upstream has acknowledged it.
    NorthMsg* m = nullptr;
    for (auto it = b.queued.rbegin(); it != b.queued.rend() && it->store_seq >= seq; ++it)
      if (it->store_seq == seq) m = &*it;
    for (auto it = b.inflight.begin(); m == nullptr && it != b.inflight.end(); ++it)
      if (it->second.store_seq == seq) m = &it->second;
    if (m != nullptr) {
      m->origin = origin;
      m->has_origin = true;
    } else {
      AckOrigin(origin, /*failed=*/false);  // the upstream has it already
    }
  }
}

void Worker::StoreGauges(uint32_t bridge, MonoNs now) {
  BridgeState& b = bstate_[bridge];
  if (!b.log) return;
  BridgeTraffic& bt = bridge_traffic_[bridge];
  const store::Log& l = *b.log;
  const store::LogStats& st = l.stats();
  bt.store_messages.Set(l.live_records());
  bt.store_bytes.Set(l.live_bytes());
  bt.store_segments.Set(l.segments());
  bt.store_memory_bytes.Set(b.resident_bytes);
  bt.store_appended.Set(st.appended.load(std::memory_order_relaxed));
  bt.store_drained.Set(st.released.load(std::memory_order_relaxed));
  bt.store_commits.Set(st.commits.load(std::memory_order_relaxed));
  bt.store_written_bytes.Set(st.written_bytes.load(std::memory_order_relaxed));
  bt.store_io_errors.Set(st.io_errors.load(std::memory_order_relaxed));
  bt.store_commit_p50_us.Set(st.commit_latency.Percentile(0.50) / 1000);
  bt.store_commit_p99_us.Set(st.commit_latency.Percentile(0.99) / 1000);
  if (now - b.rate_at >= kSecNs) {  // rates over the last second or so
    const uint64_t appended = st.appended.load(std::memory_order_relaxed);
    const uint64_t released = st.released.load(std::memory_order_relaxed);
    const uint64_t dt = now - b.rate_at;
    if (b.rate_at != 0) {
      bt.store_append_rate.Set((appended - b.rate_appended) * kSecNs / dt);
      bt.store_drain_rate.Set((released - b.rate_released) * kSecNs / dt);
    }
    b.rate_at = now, b.rate_appended = appended, b.rate_released = released;
    // The oldest message held, found once a second (a scan of what is in flight): the queue
    // is in arrival order, and what is in flight went out before it.
    MonoNs oldest = kNeverNs;
    for (const auto& [id, m] : b.inflight)
      if (m.store_seq) oldest = std::min(oldest, m.stored_at);
    for (const NorthMsg& m : b.queued) {
      if (m.store_seq) {
        oldest = std::min(oldest, m.stored_at);
        break;
      }
    }
    b.oldest_stored_at = oldest;
  }
  const MonoNs oldest = b.log->live_records() ? b.oldest_stored_at : kNeverNs;
  bt.store_oldest_age_ms.Set(oldest == kNeverNs || now < oldest ? 0 : (now - oldest) / kMsNs);
}

// A reload removed the bridge: what is committed stays on disk for a bridge of the same name
// (a replaced bridge recovers it at once); the publishers still waiting for a commit get it.
void Worker::CloseStore(uint32_t bridge) {
  BridgeState& b = bstate_[bridge];
  if (!b.log) return;
  b.log->Flush([&](const store::Commit& c) { OnCommit(bridge, c); });
  StoreGauges(bridge, now_);
  const uint64_t kept = b.log->live_records();
  if (kept > 0) {
    std::fprintf(stderr, "qbridge: store %s: %llu message%s kept for the bridge's return\n",
                 config_.bridges[bridge].store.log.dir.c_str(), static_cast<unsigned long long>(kept),
                 kept == 1 ? "" : "s");
  }
  b.log.reset();
  stored_bridges_.erase(std::remove(stored_bridges_.begin(), stored_bridges_.end(), bridge),
                        stored_bridges_.end());
}

}  // namespace qbridge::dp
