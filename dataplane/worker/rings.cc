// Everything that crosses cores: datagrams steered to the worker that owns their
// connection (by CID, or by a bridge's UDP port), the drain of the rings from other cores
// and the controlplane, PUBLISHes routed to another core's connections, and the outbox flush
// with its drop rules (steered datagrams may be dropped and are counted; PUBLISHes, acks and
// control packets wait, never dropped). Bytes cross in blocks of the sender's pool, handed
// back by the receiver. No locks: each ring has one producer and one consumer.

#include "dataplane/worker/worker.h"

#include <netinet/in.h>

#include <cstring>

#include "dataplane/worker/conn.h"

namespace qbridge::dp {

// --- input -------------------------------------------------------------------------------------

void Worker::OnDatagram(const quic::Path& path, std::span<const uint8_t> d, MonoNs now, Emit emit,
                        bool steer) {
  stats_.rx_datagrams.Inc();
  stats_.rx_bytes.Inc(d.size());
  if (d.empty()) return;
  if (steer && !config_.north_ports.empty()) {
    // To another worker's bridge port: its connection, whatever queue it arrived on.
    const uint16_t port = ntohs(reinterpret_cast<const sockaddr_in*>(&path.local.storage)->sin_port);
    for (uint16_t k = 0; k < config_.north_ports.size(); ++k) {
      if (config_.north_ports[k] == port && k != config_.core && k < rings_->workers()) {
        ForwardDatagram(k, path, d);
        return;
      }
    }
  }
  // Our own bridges' traffic first: their client CIDs are random, not owner-encoded. Two
  // bridges to one upstream share the 4-tuple: then the DCID says which.
  Conn* north = nullptr;
  bool shared = false;
  for (Conn* c : north_) {
    if (c && c->q && c->q->path().remote == path.remote) {
      shared = north != nullptr;
      if (!north) north = c;
      if (shared) break;
    }
  }
  if (north && shared) {
    north = nullptr;
    std::span<const uint8_t> dcid;
    if ((d[0] & 0x80) == 0) {
      if (d.size() > 1 + quic::kClientCidLen) dcid = d.subspan(1, quic::kClientCidLen);
    } else if (d.size() > 6 && d[5] <= d.size() - 6) {
      dcid = d.subspan(6, d[5]);
    }
    for (Conn* c : north_) {
      if (c && c->q && c->q->path().remote == path.remote && !dcid.empty() && c->q->HasScid(dcid)) {
        north = c;
        break;
      }
    }
    if (!north) {
      stats_.drop_no_conn.Inc();
      return;
    }
  }
  if (north) {
    if (!north->q->Read(path, d, now)) north->dead = true;
    return;
  }
  if (config_.listen_port != 0 &&
      ntohs(reinterpret_cast<const sockaddr_in*>(&path.local.storage)->sin_port) != config_.listen_port) {
    stats_.drop_no_conn.Inc();  // to a bridge port, for no bridge connection
    return;
  }
  if (steer && rings_->workers() > 1) {
    // Short headers and Handshake packets carry a CID we issued: its owner is the core
    // that holds the connection. Initial and 0-RTT packets carry the client's own DCID
    // and stay where RSS put them (the 4-tuple keeps them together).
    const uint8_t* dcid = nullptr;
    size_t dcidlen = 0;
    if ((d[0] & 0x80) == 0) {
      if (d.size() > 1 + quic::kServerCidLen) dcid = d.data() + 1, dcidlen = quic::kServerCidLen;
    } else if (d.size() > 6 && ((d[0] >> 4) & 3) == 2 && d[5] <= d.size() - 6) {
      dcid = d.data() + 6, dcidlen = d[5];
    }
    if (dcidlen == quic::kServerCidLen) {
      const uint16_t owner = quic::CidOwner(dcid, dcidlen);
      if (owner != config_.core && owner < rings_->workers()) {
        ForwardDatagram(owner, path, d);
        return;
      }
    }
  }
  if (endpoint_) endpoint_->Receive(path, d, now, emit);
}

void Worker::ForwardDatagram(uint16_t owner, const quic::Path& path, std::span<const uint8_t> d) {
  // One copy, straight into the block the message hands over: the path, then the bytes.
  // Blocks come from this core's pool and come back from the receiver; only when the pool
  // is out (the receiver is far behind) or the datagram is oversized does one come from
  // the heap (counted).
  Msg m = MakeMsg(MsgType::kDatagram, ConnRef{});
  uint8_t* dst = AttachBytes(m, sizeof(quic::Path) + d.size());
  std::memcpy(dst, &path, sizeof(quic::Path));
  std::memcpy(dst + sizeof(quic::Path), d.data(), d.size());
  outbox_workers_[owner].push_back(m);
  stats_.cid_forwarded.Inc();
}

uint8_t* Worker::AttachBytes(Msg& m, size_t len) {
  m.len = uint32_t(len);
  m.src_core = config_.core;
  if (len <= Msg::kInline) return m.inline_bytes;
  if (len <= kBlockSize && !block_free_.empty()) {
    m.heap = block_free_.back();
    block_free_.pop_back();
    m.flags |= kMsgPooled;
  } else {
    m.heap = new uint8_t[len];
    stats_.ring_heap_blocks.Inc();
  }
  return m.heap;
}

bool Worker::DrainRings(MonoNs now, Emit emit) {
  Msg batch[32];
  bool any = false;
  for (size_t src = 0; src <= rings_->workers(); ++src) {
    if (src == config_.core) continue;
    MsgRing& ring = rings_->ring(src, config_.core);
    stats_.ring_in_hwm.Max(ring.ApproxSize());
    size_t taken = 0;
    while (taken < kMaxMsgsPerRing) {
      const size_t n = ring.DequeueBurst(batch);
      if (n == 0) break;
      any = true;
      taken += n;
      for (size_t i = 0; i < n; ++i) {
        Msg& m = batch[i];
        if (m.type == MsgType::kPublish) {
          OnRoutedPublish(m);
        } else if (m.type == MsgType::kAck) {
          AckSouth(m.conn, int64_t(m.arg >> 16), uint16_t(m.arg & 0xffff), m.flags & kMsgFailed);
        } else if (m.type == MsgType::kDatagram) {
          stats_.cid_received.Inc();
          const auto b = m.bytes();
          if (b.size() > sizeof(quic::Path)) {
            quic::Path p;
            std::memcpy(&p, b.data(), sizeof(quic::Path));
            OnDatagram(p, b.subspan(sizeof(quic::Path)), now, emit, /*steer=*/false);
          }
        } else if (m.type == MsgType::kBlockReturn) {
          block_free_.push_back(reinterpret_cast<uint8_t*>(m.arg));
        } else {
          OnControlMsg(m, now);
        }
        if (m.flags & kMsgPooled) {  // back to its owner (never dropped: see FlushOutbox)
          Msg r = MakeMsg(MsgType::kBlockReturn, ConnRef{});
          r.arg = reinterpret_cast<uint64_t>(m.heap);
          r.src_core = config_.core;
          outbox_workers_[m.src_core].push_back(r);
        }
        ReleaseMsg(m);
      }
    }
  }
  return any;
}

void Worker::OnRoutedPublish(const Msg& m) {
  const bool has_origin = m.flags & kMsgHasOrigin;
  const Origin origin{m.conn, int64_t(m.arg >> 16), uint16_t(m.arg & 0xffff)};
  bool handled = false;
  mqtt::Framer f(mqtt::kMaxPacketSize);
  (void)f.Feed(m.bytes(), [&](const mqtt::Frame& fr) {
    mqtt::Publish p;
    if (!mqtt::DecodePublish(fr.header, fr.body, mqtt::Version::k5, &p).ok()) return false;
    handled = true;
    if (m.aux == kRouteAsPublished) {
      Route(*injector_, p, nullptr);
    } else if (m.aux != 0) {
      if (!PublishNorth(m.aux - 1, int(m.stream), p, now_, has_origin ? &origin : nullptr)) {
        stats_.drop_route_failed.Inc();
        if (has_origin) AckOrigin(origin, /*failed=*/true);
      }
    } else {
      const uint64_t tag = has_origin ? 0 : m.arg;  // SharedTag, or 0
      DeliverSouth(m.conn, m.stream, p, uint32_t(tag), mqtt::QoS((tag >> 32) & 3));
    }
    return false;
  });
  if (!handled && has_origin) AckOrigin(origin, /*failed=*/true);
}

bool Worker::PostPublish(uint16_t core, ConnRef to, int64_t stream, uint32_t aux,
                         const mqtt::Publish& p, const Origin* origin, uint64_t shared) {
  // The receiving core numbers the message for its own connection; QoS 1 and 2 cannot be
  // encoded without a packet identifier, so the copy on the ring carries a placeholder.
  const mqtt::Publish* carried = &p;
  mqtt::Publish numbered;
  if (p.qos != mqtt::QoS::k0 && p.packet_id == 0) {
    numbered = p;
    numbered.packet_id = 1;
    carried = &numbered;
  }
  // Encoded straight into the block the message hands over.
  const size_t n = mqtt::EncodedSize(*carried, mqtt::Version::k5);
  if (n == 0) {
    stats_.drop_route_failed.Inc();
    return false;
  }
  Msg m = MakeMsg(MsgType::kPublish, to, stream);
  uint8_t* dst = AttachBytes(m, n);
  if (mqtt::Encode(*carried, mqtt::Version::k5, std::span<uint8_t>(dst, n)) != n) {
    if (m.flags & kMsgPooled) block_free_.push_back(m.heap);
    ReleaseMsg(m);
    stats_.drop_route_failed.Inc();
    return false;
  }
  m.aux = aux;
  if (aux == 0) m.arg = shared;
  if (origin) {
    m.flags |= kMsgHasOrigin;
    m.conn = origin->conn;
    m.arg = KeyOf(origin->stream, origin->id);
  }
  stats_.routed_cross_core.Inc();
  outbox_workers_[core].push_back(m);
  return true;
}

void Worker::FlushOutbox() {
  if (!outbox_cp_.empty()) {
    MsgRing& r = rings_->ring(config_.core, rings_->cp());
    const size_t n = r.EnqueueBurst(outbox_cp_);
    // Control packets the controlplane cannot take now wait for the next iteration (the
    // QUIC stream's flow control holds the rest back); they are never dropped.
    outbox_cp_.erase(outbox_cp_.begin(), outbox_cp_.begin() + long(n));
  }
  for (size_t w = 0; w < outbox_workers_.size(); ++w) {
    auto& box = outbox_workers_[w];
    if (box.empty()) continue;
    const size_t n = rings_->ring(config_.core, w).EnqueueBurst(box);
    // What the ring cannot take now: forwarded datagrams are dropped and counted (QUIC
    // recovers); PUBLISHes and acks wait for the next iteration, in order, never dropped.
    size_t kept = 0;
    for (size_t i = n; i < box.size(); ++i) {
      if (box[i].type == MsgType::kDatagram) {
        stats_.drop_ring_full.Inc();
        if (box[i].flags & kMsgPooled) block_free_.push_back(box[i].heap);
        ReleaseMsg(box[i]);
      } else {
        box[kept++] = box[i];
      }
    }
    box.resize(kept);
  }
}

}  // namespace qbridge::dp
