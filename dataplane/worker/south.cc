// South sessions' delivery side: acknowledging a south client's QoS 1 PUBLISH once every
// upstream it went to has (end to end, across cores), and delivering PUBLISHes to a south
// client within its Receive Maximum, queueing the rest in order (max_mqueue_len).

#include "dataplane/worker/worker.h"

#include "dataplane/worker/conn.h"

namespace qbridge::dp {

void Worker::SendSouthAck(Conn& c, int64_t sid, uint16_t id, bool failed) {
  if (failed && c.version != mqtt::Version::k5) {
    // 3.x has no negative PUBACK, and a PUBACK would claim delivery: end the exchange without
    // one (the client sends the message again when it reconnects).
    c.inbound.OnAckSent(uint64_t(sid), id, mqtt::ReasonCode::kUnspecifiedError);
    return;
  }
  mqtt::PubAck ack;
  ack.type = mqtt::PacketType::kPuback;
  ack.packet_id = id;
  if (failed) ack.reason = mqtt::ReasonCode::kQuotaExceeded;
  SendPacket(c, sid, ack);
  c.inbound.OnAckSent(uint64_t(sid), id, ack.reason);
}

void Worker::AckOrigin(const Origin& o, bool failed) {
  if (!o.conn.valid()) return;
  if (o.conn.core == config_.core) return AckSouth(o.conn, o.stream, o.id, failed);
  Msg m = MakeMsg(MsgType::kAck, o.conn, o.stream);
  m.arg = KeyOf(o.stream, o.id);
  m.flags = failed ? kMsgFailed : 0;
  m.src_core = config_.core;
  outbox_workers_[o.conn.core].push_back(m);
}

void Worker::AckSouth(ConnRef ref, int64_t stream, uint16_t id, bool failed) {
  Conn* c = Lookup(ref);
  if (c == nullptr || c->north) return;  // gone: the client resends after reconnecting
  auto it = c->e2e.find(KeyOf(stream, id));
  if (it == c->e2e.end()) return;
  it->second.failed |= failed;
  if (--it->second.outstanding > 0) return;
  const bool any_failed = it->second.failed;
  c->e2e.erase(it);
  SendSouthAck(*c, stream, id, any_failed);
  if (auto st = c->streams.find(stream); st != c->streams.end() && st->second->fin_pending && c->q) {
    bool owed = false;
    for (const auto& [key, a] : c->e2e) owed |= int64_t(key >> 16) == stream;
    if (!owed) {
      st->second->fin_pending = false;
      (void)c->q->SendFin(stream);
    }
  }
}

bool Worker::SouthCanTake(ConnRef to, mqtt::QoS qos) {
  const Conn* c = Lookup(to);
  if (c == nullptr || c->north || !c->activated || c->close_at || c->tcp_close) return false;
  const bool must_queue = c->ids.in_use() >= c->out_window || !c->out_queue.empty();
  return qos == mqtt::QoS::k0 || !must_queue || c->out_queue.size() < config_.max_mqueue_len;
}

bool Worker::DeliverSouth(ConnRef to, int64_t stream, const mqtt::Publish& p, uint32_t shared,
                          mqtt::QoS shared_qos) {
  Conn* c = Lookup(to);
  if (c == nullptr || c->north || !c->activated || c->close_at || c->tcp_close) {
    stats_.drop_route_failed.Inc();
    return false;
  }
  mqtt::Publish out = p;
  if (out.qos != mqtt::QoS::k0) {
    // The client's Receive Maximum bounds what it has unacknowledged; beyond it deliveries
    // wait in order (up to max_mqueue_len) for its acks.
    if (c->ids.in_use() >= c->out_window || !c->out_queue.empty()) {
      if (c->out_queue.size() >= config_.max_mqueue_len) {
        stats_.drop_client_queue_full.Inc();
        return false;
      }
      out.packet_id = 1;  // patched when sent
      quic::Buffer buf = Encode(out, c->version);
      if (!buf) {
        stats_.drop_route_failed.Inc();
        return false;
      }
      const size_t offset = PacketIdOffset(buf, out.topic.size());
      c->out_queue.push_back(Conn::QueuedDelivery{stream, std::move(buf), offset, shared, shared_qos});
      stats_.publish_out.Inc();
      stats_.publish_bytes_out.Inc(p.payload.size());
      return true;
    }
    auto id = c->ids.Allocate();
    if (!id) {
      stats_.drop_route_failed.Inc();
      return false;
    }
    out.packet_id = *id;
  }
  // A $share delivery at QoS 1/2 keeps its bytes (another member gets them if this one
  // goes); anything else is encoded where it is sent from.
  bool sent;
  if (shared != 0 && out.qos != mqtt::QoS::k0) {
    quic::Buffer buf = Encode(out, c->version);
    sent = bool(buf);
    if (sent) {
      c->shared_inflight.push_back({out.packet_id, shared, shared_qos, buf});
      SendBuffer(*c, stream, std::move(buf));
    }
  } else {
    sent = SendPacket(*c, stream, out);
  }
  if (!sent) {
    if (out.qos != mqtt::QoS::k0) c->ids.Release(out.packet_id);
    stats_.drop_route_failed.Inc();
    return false;
  }
  stats_.publish_out.Inc();
  stats_.publish_bytes_out.Inc(p.payload.size());
  return true;
}

void Worker::SharedAcked(Conn& c, uint16_t id) {
  auto& v = c.shared_inflight;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].id != id) continue;
    v[i] = std::move(v.back());
    v.pop_back();
    return;
  }
}

// A south client acknowledged a delivery: what waited for its window goes out, in order.
void Worker::DrainSouthQueue(Conn& c) {
  while (!c.out_queue.empty() && c.ids.in_use() < c.out_window) {
    Conn::QueuedDelivery& d = c.out_queue.front();
    if (c.streams.find(d.sid) == c.streams.end()) {  // its stream is gone: so is the delivery
      if (d.shared) {
        RedeliverOne(c, d.shared, d.shared_qos, d.packet);  // unless another member takes it
      } else {
        stats_.drop_route_failed.Inc();
      }
      c.out_queue.pop_front();
      continue;
    }
    auto id = c.ids.Allocate();
    if (!id) return;
    SetPacketId(d.packet, d.id_offset, *id);
    if (d.shared) c.shared_inflight.push_back({*id, d.shared, d.shared_qos, d.packet});
    SendBuffer(c, d.sid, std::move(d.packet));
    c.out_queue.pop_front();
  }
}

}  // namespace qbridge::dp
