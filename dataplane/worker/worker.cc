// The worker's lifetime and its loop's phases that are not about one concern: creation
// (pools, the south endpoint, the TCP listener's epoll set, start-up bridges), the slot table
// every connection lives in, and the timer and write phases of PollOnce (worker.h holds
// the loop itself). What each connection does with its bytes lives in the other files of
// this folder; this one must not grow protocol logic.

#include "dataplane/worker/worker.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "dataplane/worker/conn.h"

namespace qbridge::dp {

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerConfig config, RingMesh* rings,
                                                       ActivityTable* activity) {
  if (rings == nullptr || activity == nullptr) return absl::InvalidArgumentError("no rings");
  if (config.core >= rings->workers()) {
    return absl::InvalidArgumentError(absl::StrCat("worker core ", config.core, " has no rings"));
  }
  if (activity->size() < config.max_conns) {
    return absl::InvalidArgumentError("activity table smaller than max_conns");
  }
  std::unique_ptr<Worker> w(new Worker(std::move(config), rings, activity));
  if (absl::Status s = w->Init(); !s.ok()) return s;
  return w;
}

Worker::Worker(WorkerConfig config, RingMesh* rings, ActivityTable* activity)
    : config_(std::move(config)), rings_(rings), activity_(activity) {}

Worker::~Worker() {
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  // South connections die with the endpoint; say nothing to a controlplane that is going too.
  endpoint_.reset();
  for (Msg& m : outbox_cp_) ReleaseMsg(m);
  for (auto& v : outbox_workers_)
    for (Msg& m : v) ReleaseMsg(m);
}

absl::Status Worker::Init() {
  if (rings_->workers() > 1) {
    block_pool_ = std::make_unique<uint8_t[]>(kBlockSize * kBlocks);
    block_free_.reserve(kBlocks);
    for (size_t i = 0; i < kBlocks; ++i) block_free_.push_back(block_pool_.get() + i * kBlockSize);
  }
  // Start-up bridges are added one by one, as a reload adds one (AddBridge).
  std::vector<BridgeDial> dials = std::move(config_.bridges);
  config_.bridges.clear();
  const size_t bridges = dials.size();
  if (bridges > kMaxBridges) return absl::InvalidArgumentError("more than 64 bridges");
  if (config_.max_conns <= bridges) return absl::InvalidArgumentError("max_conns too small");
  // Slots south connections may never take: the bridges', those a reload may add included.
  north_reserved_ = std::max(bridges, std::min(kMaxBridges, config_.max_conns / 4));
  // Slots are numbered up front; a connection's state is allocated the first time its slot
  // is used and kept for reuse, so memory follows the connections actually seen.
  slots_.resize(config_.max_conns);
  for (uint32_t i = 0; i < config_.max_conns; ++i) free_slots_.push_back(i);
  bridge_traffic_ = std::make_unique<BridgeTraffic[]>(kMaxBridges);
  size_t max_payload = 1500;
  if (config_.server_tls) {
    config_.endpoint.owner_id = config_.core;
    config_.endpoint.max_connections =
        std::min(config_.endpoint.max_connections, config_.max_conns - north_reserved_);
    max_payload = std::max(max_payload, config_.endpoint.transport.max_udp_payload);
    // A device's stream window grows to 2 MiB at most: what a publisher held back for a
    // crowded bridge (HoldBack) may still send is its window, within the slot's bound.
    quic::TransportConfig& t = config_.endpoint.transport;
    t.max_stream_window = std::min<uint64_t>(t.max_stream_window, kMaxSouthStreamWindow);
    t.stream_window = std::min(t.stream_window, t.max_stream_window);
    auto ep = quic::ServerEndpoint::Create(*config_.server_tls, config_.endpoint);
    if (!ep.ok()) return ep.status();
    endpoint_ = std::move(*ep);
    endpoint_->set_on_accept([this](quic::Connection& q) -> quic::ConnectionEvents* {
      Conn* c = AllocConn(/*north=*/false, 0);
      if (c == nullptr) {  // cannot happen: the endpoint's cap is below the table's
        q.Close(2, "overloaded");
        return nullptr;
      }
      c->q = &q;
      slot_of_[&q] = c->slot;
      activity_->at(c->slot).Reset(now_);
      awaiting_connect_.emplace_back(c->ref(), now_ + kConnectTimeoutNs);
      stats_.conns_opened.Inc();
      return c;
    });
    endpoint_->set_on_close([this](quic::Connection& q) {
      auto it = slot_of_.find(&q);
      if (it == slot_of_.end()) return;
      Conn* c = slots_[it->second].get();
      slot_of_.erase(it);
      Msg m = MakeMsg(MsgType::kConnClosed, c->ref());
      m.arg = q.peer_closed() ? q.peer_app_error() : kAppNoError;
      ToControlplane(m);
      FreeConn(c);
    });
  }
  scratch_.resize(kMaxDatagramsPerConn * max_payload);
  injector_ = std::make_unique<Conn>(this, UINT32_MAX);
  injector_->Reset(/*north=*/false, 0);
  if (config_.tls_listen_fd >= 0 && config_.tcp_tls == nullptr) {
    return absl::InvalidArgumentError("a TLS listener needs its server context");
  }
  for (const auto& [fd, tag] : {std::pair{config_.tcp_listen_fd, kListenTag}, {config_.tls_listen_fd, kTlsListenTag}}) {
    if (fd < 0) continue;
    if (epoll_fd_ < 0) epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return absl::ErrnoToStatus(errno, "epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::ErrnoToStatus(errno, "epoll_ctl(listen)");
    }
  }
  initializing_ = true;
  for (BridgeDial& d : dials) {
    if (absl::Status st = AddBridge(std::move(d)); !st.ok()) return st;
  }
  initializing_ = false;
  outbox_workers_.resize(rings_->workers());
  return absl::OkStatus();
}

// --- connections -------------------------------------------------------------------------------

Worker::Conn* Worker::AllocConn(bool north, uint32_t bridge) {
  if (free_slots_.empty()) return nullptr;
  const uint32_t slot = free_slots_.front();
  free_slots_.pop_front();
  if (!slots_[slot]) slots_[slot] = std::make_unique<Conn>(this, slot);
  Conn* c = slots_[slot].get();
  c->Reset(north, bridge);
  ++live_conns_;
  return c;
}

void Worker::FreeConn(Conn* c) {
  stats_.conns_closed.Inc();
  // Before the slot is reused: what a $share group gave this client and it did not
  // acknowledge goes to another member.
  if (!c->north && (!c->shared_inflight.empty() || !c->out_queue.empty())) RedeliverShared(*c);
  c->q = nullptr;
  c->owned.reset();
  if (c->fd >= 0) ::close(c->fd);  // leaves the epoll set with it
  c->fd = -1;
  c->tls.reset();
  c->tx.clear();
  c->tx.shrink_to_fit();
  c->streams.clear();
  c->held.clear();
  c->out_queue = quic::Fifo<Conn::QueuedDelivery>();  // deliveries that waited for it
  c->e2e.clear();
  ++c->gen;  // stale references from other cores no longer match
  free_slots_.push_back(c->slot);
  --live_conns_;
}

Worker::Conn* Worker::Lookup(ConnRef ref) {
  if (ref.core != config_.core || ref.slot >= slots_.size()) return nullptr;
  Conn* c = slots_[ref.slot].get();
  if (c == nullptr || c->gen != ref.gen || (c->q == nullptr && c->fd < 0)) return nullptr;
  return c;
}

// --- timers and output -------------------------------------------------------------------------

MonoNs Worker::NextDeadline() const {
  MonoNs t = endpoint_ ? endpoint_->Expiry() : kNeverNs;
  if (!awaiting_connect_.empty()) t = std::min(t, awaiting_connect_.front().second);
  for (const ConnRef& r : closing_) {
    const Conn* c = r.slot < slots_.size() ? slots_[r.slot].get() : nullptr;  // may be null
    if (c && c->gen == r.gen && c->close_at) t = std::min(t, c->close_at);
  }
  for (const Conn* c : north_) {
    if (c && c->q) t = c->dead ? 0 : std::min(t, c->q->Expiry());
  }
  return t;
}

void Worker::RunPendingCloses(MonoNs now) {
  for (size_t i = 0; i < closing_.size();) {
    Conn* c = Lookup(closing_[i]);
    // Close once the control stream's bytes are acknowledged, or at the linger deadline.
    const bool draining =
        c != nullptr && (c->tcp ? c->tx_off < c->tx.size() || (c->tls && c->tls->wants_write())
                                : c->q->BufferedBytes(0) > 0 &&
                                      c->q->state() == quic::Connection::State::kEstablished);
    if (c != nullptr && now < c->close_at && draining) {
      ++i;
      continue;
    }
    if (c != nullptr) CloseConn(*c, c->close_error);
    closing_[i] = closing_.back();
    closing_.pop_back();
  }
}

void Worker::RunTimers(MonoNs now) {
  if (!closing_.empty()) RunPendingCloses(now);
  while (!awaiting_connect_.empty() && awaiting_connect_.front().second <= now) {
    Conn* c = Lookup(awaiting_connect_.front().first);
    awaiting_connect_.pop_front();
    if (c != nullptr && !c->connect_seen) {
      stats_.drop_connect_timeout.Inc();
      CloseConn(*c, kAppCtrlStreamDown);
    }
  }
  if (endpoint_ && endpoint_->Expiry() <= now) endpoint_->HandleExpiry(now);
  for (Conn* c : north_) {
    if (c && c->q && c->q->Expiry() <= now && !c->q->HandleExpiry(now)) c->dead = true;
  }
}

const quic::Path* Worker::NorthPath(size_t bridge) const {
  const Conn* c = north_[bridge];
  return c && c->q ? &c->q->path() : nullptr;
}

void Worker::WriteAll(MonoNs now, Emit emit) {
  if (endpoint_) endpoint_->WriteAll(now, scratch_, kMaxDatagramsPerConn, emit);
  for (size_t b = 0; b < north_.size(); ++b) {
    Conn* c = north_[b];
    if (c == nullptr || c->q == nullptr) continue;  // TCP bridges write as they go
    quic::Connection& q = *c->q;
    if (!north_hold_[b]) WriteNorth(c, b, now, emit);
    if (c->dead || q.state() == quic::Connection::State::kClosing ||
        q.state() == quic::Connection::State::kDraining ||
        q.state() == quic::Connection::State::kClosed) {
      OnNorthClosed(c);
    }
  }
}

}  // namespace qbridge::dp
