// MQTT on a connection's streams, for every kind of connection (south QUIC, south TCP,
// north bridge): bytes into the stream's framer, each packet to its handler (control
// packets to the controlplane, PUBLISH and its acks here), and the write side (a packet
// encoded straight into the buffer the transport keeps until it is acknowledged). Stream
// and connection errors follow EMQX's wire model (mqtt-over-quic.md 1.6).

#include "dataplane/worker/worker.h"

#include "dataplane/worker/conn.h"

namespace qbridge::dp {

// --- MQTT on streams ---------------------------------------------------------------------------

void Worker::OnStreamData(Conn& c, int64_t sid, std::span<const uint8_t> data, bool fin,
                          MonoNs now) {
  Conn::Stream& st = c.stream(sid);
  if (st.failed) return;
  const mqtt::CodecStatus s = st.framer.Feed(data, [&](const mqtt::Frame& f) {
    OnFrame(c, sid, f, now);
    return !st.failed;
  });
  if (!s.ok()) {
    (s.code == mqtt::ReasonCode::kPacketTooLarge ? stats_.drop_mqtt_oversize
                                                  : stats_.drop_mqtt_malformed)
        .Inc();
    StreamError(c, sid, s.code);
    return;
  }
  if (fin && c.q) {
    if (sid == 0 && !c.north) {
      // The client ended its control stream: the MQTT connection is over (EMQX: app error 0).
      c.q->Close(kAppNoError);
    } else if (sid != 0) {
      // Peer FIN -> FIN (EMQX), once the PUBACKs owed on the stream have gone out.
      bool owed = false;
      for (const auto& [key, a] : c.e2e) owed |= int64_t(key >> 16) == sid;
      if (owed) {
        st.fin_pending = true;
      } else {
        (void)c.q->SendFin(sid);
      }
    }
  }
}

void Worker::OnFrame(Conn& c, int64_t sid, const mqtt::Frame& f, MonoNs now) {
  using T = mqtt::PacketType;
  stats_.mqtt_packets_in.Inc();
  const T type = f.type();
  if (!c.north) {
    ConnActivity& a = activity_->at(c.slot);
    ConnActivity::Stamp(a.last_rx, now);
    if (sid == 0) ConnActivity::Stamp(a.last_rx_control, now);
    if (type == T::kConnect) {
      if (sid != 0 || c.connect_seen) {
        stats_.drop_bad_stream.Inc();
        return StreamError(c, sid, mqtt::ReasonCode::kProtocolError);
      }
      c.connect_seen = true;
      stats_.control_to_cp.Inc();
      Msg m = MakeMsg(MsgType::kControlPacket, c.ref(), sid, f.whole);
      if (c.tcp) m.flags |= kMsgTcp;
      return ToControlplane(m);
    }
    if (!c.activated) {
      // Before CONNACK the client may already send on any stream (EMQX keeps the streams
      // inactive until CONNECT is accepted): hold its packets, bounded.
      if (!c.connect_seen || c.held_bytes + f.whole.size() > config_.pre_activation_bytes) {
        stats_.drop_not_activated.Inc();
        if (!c.connect_seen) StreamError(c, sid, mqtt::ReasonCode::kProtocolError);
        return;
      }
      c.held.push_back(Conn::Held{sid, std::vector<uint8_t>(f.whole.begin(), f.whole.end())});
      c.held_bytes += f.whole.size();
      return;
    }
    if (IsControlType(type)) {
      stats_.control_to_cp.Inc();
      return ToControlplane(MakeMsg(MsgType::kControlPacket, c.ref(), sid, f.whole));
    }
  } else {
    if (type == T::kConnack || type == T::kSuback || type == T::kUnsuback ||
        type == T::kPingresp || type == T::kDisconnect || type == T::kAuth) {
      stats_.control_to_cp.Inc();
      return ToControlplane(MakeMsg(MsgType::kControlPacket, c.ref(), sid, f.whole));
    }
  }
  switch (type) {
    case T::kPublish:
      return OnPublish(c, sid, f);
    case T::kPuback:
    case T::kPubrec:
    case T::kPubcomp: {
      mqtt::PubAck ack;
      if (!mqtt::DecodePubAck(f.header, f.body, c.version, &ack).ok()) {
        stats_.drop_mqtt_malformed.Inc();
        return StreamError(c, sid, mqtt::ReasonCode::kMalformedPacket);
      }
      if (type == T::kPubrec) {
        // A failure reason ends the exchange there (no PUBREL, spec 4.3.3).
        if (uint8_t(ack.reason) >= 0x80) {
          if (c.north) return OnNorthAck(c, ack.packet_id, ack.reason);
          SharedAcked(c, ack.packet_id);
          if (c.ids.Release(ack.packet_id)) DrainSouthQueue(c);
          return;
        }
        if (!c.north) SharedAcked(c, ack.packet_id);  // received: no other member gets it
        if (c.north) {
          BridgeState& b = bstate_[c.bridge];
          if (auto it = b.inflight.find(ack.packet_id); it != b.inflight.end()) it->second.released = true;
        }
        mqtt::PubAck rel;
        rel.type = T::kPubrel;
        rel.packet_id = ack.packet_id;
        SendPacket(c, sid, rel);
      } else if (c.north) {
        OnNorthAck(c, ack.packet_id, ack.reason);
      } else {
        if (type == T::kPuback) SharedAcked(c, ack.packet_id);
        if (c.ids.Release(ack.packet_id)) DrainSouthQueue(c);
      }
      return;
    }
    case T::kPubrel: {
      mqtt::PubAck rel;
      if (!mqtt::DecodePubAck(f.header, f.body, c.version, &rel).ok()) {
        stats_.drop_mqtt_malformed.Inc();
        return StreamError(c, sid, mqtt::ReasonCode::kMalformedPacket);
      }
      mqtt::PubAck comp;
      comp.type = T::kPubcomp;
      comp.packet_id = rel.packet_id;
      const mqtt::ReasonCode r = c.inbound.OnPubrel(uint64_t(sid), rel.packet_id);
      if (r == mqtt::ReasonCode::kProtocolError) return StreamError(c, sid, r);
      if (c.version == mqtt::Version::k5) comp.reason = r;
      SendPacket(c, sid, comp);
      return;
    }
    default:
      stats_.drop_bad_stream.Inc();
      return StreamError(c, sid, mqtt::ReasonCode::kProtocolError);
  }
}

void Worker::OnPublish(Conn& c, int64_t sid, const mqtt::Frame& f) {
  mqtt::Publish p;
  if (!mqtt::DecodePublish(f.header, f.body, c.version, &p).ok()) {
    stats_.drop_mqtt_malformed.Inc();
    return StreamError(c, sid, mqtt::ReasonCode::kMalformedPacket);
  }
  stats_.publish_in.Inc();
  stats_.publish_bytes_in.Inc(p.payload.size());
  if (c.north) {
    bridge_traffic_[c.bridge].rx_msgs.Inc();
    bridge_traffic_[c.bridge].rx_bytes.Inc(p.payload.size());
  }
  bool deliver = true;
  if (p.qos != mqtt::QoS::k0) {
    const mqtt::InboundDecision d = c.inbound.OnPublish(uint64_t(sid), p.qos, p.packet_id);
    if (d.kind == mqtt::InboundDecision::kReceiveMaxExceeded) {
      return StreamError(c, sid, mqtt::ReasonCode::kReceiveMaximumExceeded);
    }
    deliver = d.kind == mqtt::InboundDecision::kDeliver;
  }
  // QoS 1 from a south client is acknowledged end to end: only once every upstream it was
  // forwarded to has acknowledged it (local subscribers have it as soon as it is written).
  const bool e2e = p.qos == mqtt::QoS::k1 && !c.north;
  Origin origin{c.ref(), sid, p.packet_id};
  Routed routed;
  if (deliver) {
    if (on_delivery_) on_delivery_(Delivery{c.ref(), c.north, sid, &p});
    if (p.retain && !c.north) {
      // The controlplane keeps retained messages (and hands them to new subscribers).
      mqtt::Publish r = p;
      r.dup = false;
      r.packet_id = r.qos == mqtt::QoS::k0 ? 0 : 1;
      r.properties.topic_alias.reset();
      route_buf_.clear();
      if (mqtt::EncodeTo(r, mqtt::Version::k5, route_buf_)) {
        ToControlplane(MakeMsg(MsgType::kRetain, c.ref(), sid, route_buf_));
      }
    }
    crowded_.set = false;
    routed = Route(c, p, e2e ? &origin : nullptr);
    if (crowded_.set) HoldBack(c, sid);
  } else if (e2e && c.e2e.contains(KeyOf(sid, p.packet_id))) {
    return;  // a resend while the upstream's ack is awaited: that ack answers both
  }
  if (p.qos == mqtt::QoS::k0) return;
  if (e2e && routed.awaiting > 0) {
    Conn::AwaitingAck& a = c.e2e[KeyOf(sid, p.packet_id)];
    a.outstanding = routed.awaiting;
    a.failed = routed.failed;
    return;
  }
  if (p.qos == mqtt::QoS::k1) return SendSouthAck(c, sid, p.packet_id, routed.failed);
  // QoS 2 is received exactly once here (PUBREC now, duplicates dropped until PUBREL) and
  // goes on as QoS 2 where the route allows it; the bridge's worker keeps it until the
  // upstream's PUBCOMP.
  mqtt::PubAck ack;
  ack.type = mqtt::PacketType::kPubrec;
  ack.packet_id = p.packet_id;
  SendPacket(c, sid, ack);
  c.inbound.OnAckSent(uint64_t(sid), p.packet_id, ack.reason);
}

bool Worker::SendPacket(Conn& c, int64_t sid, const mqtt::Packet& p) {
  return SendPacket(c, sid, p, c.version);
}

bool Worker::SendPacket(Conn& c, int64_t sid, const mqtt::Packet& p, mqtt::Version v) {
  const size_t n = mqtt::EncodedSize(p, v);
  if (n == 0) return false;
  return SendWith(c, sid, n, [&](std::span<uint8_t> out) { return mqtt::Encode(p, v, out) == n; });
}

// Encoded straight into what the connection sends from: the TCP connection's output, or the
// QUIC stream's tail buffer (shared by the small packets of an iteration, Connection::Append).
bool Worker::SendWith(Conn& c, int64_t sid, size_t n, absl::FunctionRef<bool(std::span<uint8_t>)> fill) {
  if (c.tcp) {
    if (c.fd < 0 || c.tcp_close || c.tcp_connecting) return true;  // it is going: nothing to say
    // A peer that stops reading is cut off rather than buffered without bound.
    if (c.tx.size() - c.tx_off > (16u << 20)) return CloseConn(c, kAppNoError), true;
    const size_t at = c.tx.size();
    c.tx.resize(at + n);
    if (!fill(std::span<uint8_t>(c.tx.data() + at, n))) {
      c.tx.resize(at);
      return false;
    }
    if (!c.tcp_dirty) {  // written at the end of the iteration, with whatever else comes
      c.tcp_dirty = true;
      tcp_dirty_.push_back(c.ref());
    }
    stats_.mqtt_packets_out.Inc();
    ConnActivity::Stamp(activity_->at(c.slot).last_tx_control, now_);
    ConnActivity::Stamp(activity_->at(c.slot).last_control_wire, now_);
    return true;
  }
  if (c.q == nullptr) return true;
  const absl::Status st = c.q->Append(sid, n, pool_, fill);
  if (st.code() == absl::StatusCode::kInvalidArgument) return false;  // fill failed
  if (st.ok()) QuicQueued(c, sid);
  return true;
}

void Worker::QuicQueued(Conn& c, int64_t sid) {
  stats_.mqtt_packets_out.Inc();
  if (sid == 0) ConnActivity::Stamp(activity_->at(c.slot).last_tx_control, now_);
}

quic::Buffer Worker::Encode(const mqtt::Packet& p, mqtt::Version v) {
  const size_t n = mqtt::EncodedSize(p, v);
  if (n == 0) return {};
  quic::Buffer buf = pool_.Get(n);
  if (mqtt::Encode(p, v, buf.mutable_span()) != n) return {};
  return buf;
}

void Worker::SendBuffer(Conn& c, int64_t sid, quic::Buffer buf) {
  if (c.tcp) return SendBytes(c, sid, buf.span());
  if (c.q == nullptr) return;
  if (!c.q->Send(sid, std::move(buf)).ok()) return;
  QuicQueued(c, sid);
}

void Worker::StreamError(Conn& c, int64_t sid, mqtt::ReasonCode why) {
  if (auto it = c.streams.find(sid); it != c.streams.end()) it->second->failed = true;
  if (sid == 0) {
    // The control stream cannot be resynchronised: the MQTT connection ends (EMQX sends
    // DISCONNECT, then closes with app error 1).
    if (c.version == mqtt::Version::k5 && !c.north) {
      mqtt::Disconnect d;
      d.reason = why;
      SendPacket(c, 0, d);
    }
    CloseConn(c, kAppCtrlStreamDown);
  } else {
    // Only that data stream closes (EMQX: malformed or oversized on a data stream).
    c.q->ResetStream(sid, uint64_t(why));
  }
}

void Worker::CloseConn(Conn& c, uint64_t app_error) {
  if (c.tcp) {
    if (!c.tcp_close) {
      c.tcp_close = true;
      tcp_closing_.push_back(c.ref());
    }
    return;
  }
  if (c.q) c.q->Close(app_error);
  if (c.north) c.dead = true;
}

}  // namespace qbridge::dp
