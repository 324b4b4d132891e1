// A connection's send side: streams opened and fed (bytes referenced, never copied, until
// ngtcp2 reports them acknowledged), the write scheduler (control stream 0 first in every
// round, then data streams by priority, round robin within one), the writev_stream loop that
// packs GSO-style batches, and the close path's last packet. connection.cc has the rest of
// the connection: construction, input, timers, callbacks.
#include "quic/connection.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "quic/ng_path.h"

namespace qbridge::quic {

// --- streams ---------------------------------------------------------------------------------

absl::StatusOr<int64_t> Connection::OpenStream(int priority) {
  WantWrite();
  int64_t sid = -1;
  const int rv = ngtcp2_conn_open_bidi_stream(conn_, &sid, nullptr);
  if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
    return absl::UnavailableError("quic: no stream credit from the peer");
  if (rv != 0) return absl::InternalError(absl::StrCat("open stream: ", ngtcp2_strerror(rv)));
  SendStream& s = streams_[sid];
  s.id = sid;
  s.priority = priority;
  return sid;
}

absl::StatusOr<Connection::SendStream*> Connection::StreamToSend(int64_t stream_id) {
  WantWrite();
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    // A peer-opened stream we have not written to yet (server side); not one that is
    // closed, or that the client never opened.
    if (!server_ || (stream_id & 0x3) != 0 ||
        ngtcp2_conn_set_stream_user_data(conn_, stream_id, nullptr) != 0)
      return absl::NotFoundError("quic: no such stream");
    it = streams_.emplace(stream_id, SendStream{}).first;
    it->second.id = stream_id;
  }
  if (it->second.fin_queued) return absl::FailedPreconditionError("quic: stream already finished");
  return &it->second;
}

absl::Status Connection::Append(int64_t stream_id, size_t n, BufferPool& pool,
                                absl::FunctionRef<bool(std::span<uint8_t>)> fill) {
  absl::StatusOr<SendStream*> st = StreamToSend(stream_id);
  if (!st.ok()) return st.status();
  SendStream& s = **st;
  if (n == 0) return absl::OkStatus();
  if (!s.chunks.empty() && s.chunks.size() - 1 >= s.unsent_idx) {
    Chunk& tail = s.chunks.back();
    // Bytes handed to ngtcp2 stay where they are (it reads them again for a retransmission
    // until they are acknowledged): the tail only grows into its block's spare room.
    if (tail.off + tail.len == tail.buf.size() && tail.buf.spare() >= n && tail.buf.unique()) {
      const size_t before = tail.buf.size();
      if (!fill(tail.buf.Extend(n))) {
        tail.buf.Truncate(before);
        return absl::InvalidArgumentError("quic: nothing to append");
      }
      tail.len += n;
      s.end += n;
      return absl::OkStatus();
    }
  }
  Buffer b = pool.Get(std::max(n, kAppendBlockBytes));
  b.Truncate(n);
  if (!fill(b.mutable_span())) return absl::InvalidArgumentError("quic: nothing to append");
  s.chunks.push_back(Chunk{std::move(b), 0, n});
  s.end += n;
  return absl::OkStatus();
}

absl::Status Connection::Send(int64_t stream_id, Buffer data, bool fin) {
  absl::StatusOr<SendStream*> st = StreamToSend(stream_id);
  if (!st.ok()) return st.status();
  SendStream& s = **st;
  if (!data.empty()) {
    const size_t len = data.size();
    s.chunks.push_back(Chunk{std::move(data), 0, len});
    s.end += len;
  }
  s.fin_queued = fin;
  return absl::OkStatus();
}

void Connection::SetPriority(int64_t stream_id, int priority) {
  auto it = streams_.find(stream_id);
  if (it != streams_.end()) it->second.priority = priority;
}

void Connection::ResetStream(int64_t stream_id, uint64_t app_error) {
  WantWrite();
  ngtcp2_conn_shutdown_stream(conn_, 0, stream_id, app_error);
}

void Connection::Consume(int64_t stream_id, uint64_t bytes) {
  WantWrite();
  ngtcp2_conn_extend_max_stream_offset(conn_, stream_id, bytes);
  ngtcp2_conn_extend_max_offset(conn_, bytes);
}

bool Connection::HoldCredit(int64_t stream_id) {
  if (CreditHeld(stream_id)) return false;
  held_credit_.push_back(HeldCredit{stream_id, 0});
  return true;
}

void Connection::ReleaseCredit(int64_t stream_id) {
  for (size_t i = 0; i < held_credit_.size(); ++i) {
    if (held_credit_[i].stream_id != stream_id) continue;
    // A stream gone meanwhile has nothing to extend (ngtcp2 ignores it).
    if (held_credit_[i].owed) {
      WantWrite();
      ngtcp2_conn_extend_max_stream_offset(conn_, stream_id, held_credit_[i].owed);
    }
    held_credit_[i] = held_credit_.back();
    held_credit_.pop_back();
    return;
  }
}

bool Connection::CreditHeld(int64_t stream_id) const {
  for (const HeldCredit& h : held_credit_)
    if (h.stream_id == stream_id) return true;
  return false;
}

uint64_t Connection::BufferedBytes(int64_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? 0 : it->second.end - it->second.base;
}

uint64_t Connection::SentBytes(int64_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? 0 : it->second.sent;
}

uint64_t Connection::UnsentBytes(int64_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? 0 : it->second.end - it->second.sent;
}

// --- the write path --------------------------------------------------------------------------

Connection::SendStream* Connection::PickStream() {
  SendStream* best = nullptr;
  for (auto& [id, s] : streams_) {
    const bool ready = !s.blocked && (s.sent < s.end || (s.fin_queued && !s.fin_sent));
    if (!ready) continue;
    if (id == 0) return &s;  // the control stream goes first, always
    if (!best || s.priority < best->priority ||
        (s.priority == best->priority && s.served < best->served))
      best = &s;
  }
  // Data never takes the congestion window's last packet while bytes are in flight, so a
  // control packet queued next (a PINGREQ) always finds room in the very next write.
  if (best && state_ == State::kEstablished &&
      ngtcp2_conn_get_cwnd_left(conn_) < 2 * config_.max_udp_payload) {
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(conn_, &ci);
    if (ci.bytes_in_flight > 0) return nullptr;
  }
  return best;
}

size_t Connection::Gather(const SendStream& s, ngtcp2_vec* v, size_t max, uint64_t* total) const {
  size_t n = 0;
  *total = 0;
#ifndef NDEBUG
  {  // the index bookkeeping of Advance/OnAcked: every chunk before unsent_idx was sent whole
    uint64_t o = s.base;
    for (size_t i = 0; i < s.unsent_idx; ++i) o += s.chunks[i].len;
    assert(o == s.unsent_base && s.unsent_base <= s.sent);
  }
#endif
  uint64_t off = s.unsent_base;
  for (size_t i = s.unsent_idx; i < s.chunks.size() && n < max; ++i) {
    const Chunk& c = s.chunks[i];
    const uint64_t chunk_end = off + c.len;
    if (chunk_end > s.sent) {
      const uint64_t skip = s.sent > off ? s.sent - off : 0;
      v[n].base = const_cast<uint8_t*>(c.buf.data() + c.off + skip);
      v[n].len = c.len - skip;
      *total += v[n].len;
      ++n;
    }
    off = chunk_end;
  }
  return n;
}

void Connection::Advance(SendStream& s, uint64_t bytes) {
  s.sent += bytes;
  s.served = ++serve_counter_;
  while (s.unsent_idx < s.chunks.size() && s.unsent_base + s.chunks[s.unsent_idx].len <= s.sent) {
    s.unsent_base += s.chunks[s.unsent_idx].len;
    ++s.unsent_idx;
  }
}

void Connection::OnAcked(int64_t stream_id, uint64_t offset, uint64_t len) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  SendStream& s = it->second;
  const uint64_t acked = offset + len;
  // ngtcp2 reports acknowledged ranges in order without overlap: drop everything below.
  while (!s.chunks.empty() && s.base < acked) {
    Chunk& c = s.chunks.front();
    const uint64_t drop = std::min<uint64_t>(c.len, acked - s.base);
    c.off += drop;
    c.len -= drop;
    s.base += drop;
    if (s.unsent_idx == 0) s.unsent_base = s.base;  // the front chunk, partly sent
    if (c.len == 0) {
      s.chunks.pop_front();
      if (s.unsent_idx > 0) --s.unsent_idx;
    }
  }
}

bool Connection::WriteClose(Timestamp now, std::span<uint8_t> scratch, Emit emit) {
  if (state_ == State::kHandshaking || state_ == State::kEstablished) {
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    const ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
        conn_, &ps.path, &pi, scratch.data(), std::min(scratch.size(), config_.max_udp_payload),
        &close_error_, now);
    SetState(State::kClosing);
    if (n <= 0) {
      SetState(State::kClosed);  // nothing to say (e.g. before any key): just go
      return false;
    }
    close_packet_.assign(scratch.data(), scratch.data() + n);
    close_path_ = FromNgPath(ps.path);
    close_deadline_ = now + 3 * ngtcp2_conn_get_pto(conn_);  // RFC 9000 10.2
  }
  if (!close_written_ && !close_packet_.empty()) {
    emit(close_path_, close_packet_, close_packet_.size());
    close_written_ = true;
    return true;
  }
  return false;
}

size_t Connection::Write(Timestamp now, std::span<uint8_t> scratch, size_t max_datagrams,
                         Emit emit) {
  if (state_ == State::kClosed || state_ == State::kDraining) {
    want_write_ = false;
    return 0;
  }
  if (close_requested_ || state_ == State::kClosing) {
    want_write_ = false;  // a datagram read while closing asks for the close again
    return WriteClose(now, scratch, emit) ? 1 : 0;
  }

  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  // GSO segment = the path's current max (grows after PMTUD); destination room = the
  // configured max, so PMTUD probes fit (stack-notes gotcha 11).
  const size_t seg = ngtcp2_conn_get_path_max_tx_udp_payload_size(conn_);
  const size_t room = std::min(ngtcp2_conn_get_max_tx_udp_payload_size(conn_), config_.max_udp_payload);
  const size_t quantum = std::max<size_t>(1, ngtcp2_conn_get_send_quantum(conn_) / seg);
  const size_t max_pkts = std::min({quantum, max_datagrams, scratch.size() / room});
  if (max_pkts == 0) return 0;
  for (auto& [id, s] : streams_) s.blocked = false;

  // Packets accumulate in [start, start + batch) and go out as one GSO batch; a batch is
  // one path (during validation ngtcp2 writes probes on another one).
  uint8_t* const buf = scratch.data();
  size_t start = 0, batch = 0, batch_pkts = 0, total = 0;
  ngtcp2_path_storage batch_ps;
  ngtcp2_path_storage_zero(&batch_ps);
  auto flush = [&] {
    if (batch) emit(FromNgPath(batch_ps.path), std::span<const uint8_t>(buf + start, batch), seg);
    start += batch;
    batch = batch_pkts = 0;
  };
  ngtcp2_vec vecs[kMaxVecs];
  bool drained = false;
  for (;;) {
    SendStream* s = PickStream();
    int64_t sid = -1;
    size_t nvec = 0;
    uint64_t avail = 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    if (s) {
      sid = s->id;
      nvec = Gather(*s, vecs, kMaxVecs, &avail);
      if (s->fin_queued && s->sent + avail == s->end) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    }
    ngtcp2_ssize accepted = -1;
    const ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn_, &ps.path, &pi, buf + start + batch,
                                                     room, &accepted, flags, sid, vecs, nvec, now);
    if (s && accepted >= 0) {
      Advance(*s, uint64_t(accepted));
      if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && uint64_t(accepted) == avail) s->fin_sent = true;
    }
    if (n < 0) {
      if (n == NGTCP2_ERR_WRITE_MORE) continue;
      if (s && n == NGTCP2_ERR_STREAM_NOT_FOUND) {
        streams_.erase(s->id);  // gone (reset, closed): nothing of it will ever be sent
        continue;
      }
      if (s && (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR)) {
        s->blocked = true;
        continue;
      }
      flush();
      Fail(int(n));
      want_write_ = false;
      return total + (WriteClose(now, scratch, emit) ? 1 : 0);
    }
    if (n == 0) {
      drained = true;  // nothing ngtcp2 would send now
      break;
    }
    ++total;
    if (batch && !ngtcp2_path_eq(&batch_ps.path, &ps.path)) flush();  // new packet stays put
    if (batch == 0) ngtcp2_path_copy(&batch_ps.path, &ps.path);
    if (size_t(n) > seg) {
      // A PMTUD probe: larger than the segment, so it goes out on its own.
      flush();
      emit(FromNgPath(ps.path), std::span<const uint8_t>(buf + start, size_t(n)), size_t(n));
      start += size_t(n);
    } else {
      batch += size_t(n);
      ++batch_pkts;
      if (size_t(n) < seg) flush();  // a short datagram ends a GSO batch
    }
    if (total >= max_pkts) break;
    if (start + batch + room > scratch.size()) break;
  }
  flush();
  ngtcp2_conn_update_pkt_tx_time(conn_, now);
  if (total) TrackAckProgress(now);
  // Stopped by the batch limits, there may be more: ask again next time.
  want_write_ = !drained;
  return total;
}

}  // namespace qbridge::quic
