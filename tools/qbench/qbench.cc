// qbench: an MQTT load generator and checker on qbridge's own QUIC, TLS and MQTT code. It
// opens many connections from one event loop: MQTT over QUIC (EMQX's wire model: CONNECT
// on stream 0, PUBLISH and SUBSCRIBE on data streams, one UDP socket per connection) or
// MQTT over TCP, plain or TLS.
//
//   qbench pub|sub|connect --server IP:PORT [options]
//
//   --transport quic|tcp|tls   (quic)      --ca FILE (required for quic and tls)
//   --server-name NAME (localhost)         --conns N connections (1)
//   --ramp N   connections opened per second (1000)
//   --topic T  topic (pub) or filter (sub); %i is the connection's index. Subscribers to
//              a $share/GROUP/FILTER are checked together (each publisher's sequence
//              across the group: none missing or twice; `reordered` may count interleaving)
//   --id ID    client id prefix (qbench-MODE-PID); %i is the index, else "-INDEX" is added
//   --qos 0|1|2                            --size BYTES payload (64, at least 24)
//   --rate R   open-loop total msg/s over all publishers (1000); 0: connect and stay idle
//   --conn-rate R  per-connection msg/s instead of --rate
//   --streams N    QUIC data streams per connection (1)
//   --inflight N   unacknowledged QoS 1/2 messages per connection (1000)
//   --keepalive S  MQTT keepalive in CONNECT (30); PINGREQ every S/2 on the control stream
//   --seconds S    run this long once every connection is up (10; 0: until SIGTERM)
//   --quiet S      sub: stop once nothing arrived for S seconds after something did
//   --resume, --0rtt   connect (quic): resume with the last session ticket; send CONNECT as
//                      0-RTT early data
//   --json FILE    write the summary there too
//
// pub: every payload starts with its sequence number (per connection, from 0), its send time
// (CLOCK_MONOTONIC, same host) and its publisher's id. sub: checks each publisher's sequence
// per subscriber (missing, duplicated, reordered) and records transit latency in an HDR
// histogram. connect: every connection connects, gets its CONNACK, closes and connects again:
// handshakes per second with --conns in flight.
//
// Live figures go to stderr once a second; at the end a JSON summary (with the per-second
// series) goes to stdout. The summary says whether qbench itself was the limit: a publisher
// that could not keep its schedule while the system under test took everything offered, or
// a process that used a whole core.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/tcp.h>
#include <netinet/udp.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <queue>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "mqtt/codec.h"
#include "mqtt/framer.h"
#include "quic/connection.h"
#include "quic/tls.h"
#include "quic/tls_stream.h"
#include "tools/qbench/histogram.h"
#include "tools/qbench/rate.h"
#include "tools/qbench/sequence.h"

namespace {

using namespace qbridge;
using bench::Histogram;
using bench::RateController;
using bench::SequenceBook;
using Json = nlohmann::ordered_json;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

constexpr uint64_t kSecond = 1'000'000'000;
constexpr size_t kHeader = 24;  // payload: seq, send time, publisher id
constexpr uint64_t kMaxBufferedBytes = 1u << 20;  // a publisher queues at most this much
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

uint64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * kSecond + uint64_t(ts.tv_nsec);
}

uint64_t CpuNs() {
  rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (uint64_t(r.ru_utime.tv_sec) + uint64_t(r.ru_stime.tv_sec)) * kSecond +
         (uint64_t(r.ru_utime.tv_usec) + uint64_t(r.ru_stime.tv_usec)) * 1000;
}

struct Options {
  std::string mode;
  std::string transport = "quic";
  std::string server = "127.0.0.1:14567";
  std::string ca, server_name = "localhost", topic = "qbench/t", id, json;
  int qos = 0;
  double rate = 1000, conn_rate = -1, ramp = 1000, seconds = 10, quiet = 0;
  size_t size = 64;
  int streams = 1, conns = 1, inflight = 1000, keepalive = 30;
  bool resume = false, zero_rtt = false;
};

bool ParseArgs(int argc, char** argv, Options* o) {
  if (argc < 2) return false;
  o->mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--resume") {
      o->resume = true;
      continue;
    }
    if (k == "--0rtt") {
      o->zero_rtt = o->resume = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (k == "--server") o->server = v;
    else if (k == "--transport") o->transport = v;
    else if (k == "--ca") o->ca = v;
    else if (k == "--server-name") o->server_name = v;
    else if (k == "--topic") o->topic = v;
    else if (k == "--id") o->id = v;
    else if (k == "--json") o->json = v;
    else if (k == "--qos") o->qos = std::atoi(v.c_str());
    else if (k == "--rate") o->rate = std::atof(v.c_str());
    else if (k == "--conn-rate") o->conn_rate = std::atof(v.c_str());
    else if (k == "--ramp") o->ramp = std::atof(v.c_str());
    else if (k == "--size") o->size = size_t(std::atol(v.c_str()));
    else if (k == "--streams") o->streams = std::atoi(v.c_str());
    else if (k == "--conns") o->conns = std::atoi(v.c_str());
    else if (k == "--inflight") o->inflight = std::atoi(v.c_str());
    else if (k == "--keepalive") o->keepalive = std::atoi(v.c_str());
    else if (k == "--seconds") o->seconds = std::atof(v.c_str());
    else if (k == "--quiet") o->quiet = std::atof(v.c_str());
    else return false;
  }
  const bool transport_ok = o->transport == "quic" || o->transport == "tcp" || o->transport == "tls";
  const bool needs_ca = o->transport != "tcp";
  return (o->mode == "pub" || o->mode == "sub" || o->mode == "connect") && transport_ok &&
         (!needs_ca || !o->ca.empty()) && o->qos >= 0 && o->qos <= 2 && o->size >= kHeader &&
         o->streams >= 1 && o->conns >= 1 && o->inflight >= 1 && o->inflight <= 65535 && o->keepalive >= 1 &&
         o->keepalive <= 65535 && o->ramp > 0 && (!o->zero_rtt || o->transport == "quic");
}

// --server as an address; empty (and a message) when it is not IP:PORT or [IPv6]:PORT.
quic::Address ServerAddress(const std::string& server) {
  const size_t colon = server.rfind(':');
  uint32_t port = 0;
  quic::Address a;
  if (colon != std::string::npos && absl::SimpleAtoi(server.substr(colon + 1), &port) && port < 65536) {
    std::string host = server.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    a = quic::Address::FromIpPort(host, uint16_t(port));
  }
  if (a.empty()) std::fprintf(stderr, "qbench: --server IP:PORT ([IPv6]:PORT), not '%s'\n", server.c_str());
  return a;
}

std::string Expand(const std::string& pattern, int index) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == 'i') {
      out += std::to_string(index);
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

// What the whole run counts; one event loop, so plain integers.
struct Counters {
  uint64_t sent = 0, acked = 0, ack_failed = 0, received = 0, blocked = 0;
  uint64_t pings = 0, pongs = 0, ping_timeouts = 0, reconnects = 0, connect_failures = 0;
  uint64_t connects = 0, resumed = 0, early_accepted = 0, early_rejected = 0, subscribed = 0;
};

class Bench;

// One MQTT connection over QUIC or TCP/TLS, its MQTT state and its schedule.
class Conn : public quic::ConnectionEvents {
 public:
  enum class State : uint8_t { kIdle, kConnecting, kUp, kGone };

  Conn(Bench* b, uint32_t index);
  ~Conn() override { Drop(); }

  bool Open(uint64_t now);      // false: could not even start (counted)
  void Service(uint64_t now);   // reads, timers, sends, writes
  void Close(uint64_t now);     // DISCONNECT and close, gracefully
  uint64_t Deadline() const;
  int fd() const { return fd_; }
  // Bytes queued here that have not gone to the wire yet (a QoS 0 message is counted sent
  // when queued: at the end they are given time to leave).
  uint64_t Unsent() const;

  State state = State::kIdle;
  uint64_t heap_deadline = UINT64_MAX;  // earliest pending timer entry
  uint64_t reopen_at = 0;
  uint64_t inflight = 0;
  bool epoll_out = false;
  const RateController& rate() const { return rc_; }
  // At the end: what the schedule still owed counts as skipped (a connection stalled by
  // back-pressure may not have run since), then stop the schedule.
  void SettleSchedule(uint64_t at);

  // quic::ConnectionEvents
  void OnHandshakeConfirmed() override;
  void OnStreamData(int64_t sid, std::span<const uint8_t> data, bool) override;
  void OnEarlyDataRejected() override {
    streams_open_ = false;
    data_.clear();
  }

 private:
  void OpenStreamsAndConnect();
  void Send(int64_t sid, const mqtt::Packet& p);
  uint64_t Buffered(int64_t sid) const;
  void OnPacket(int64_t sid, const mqtt::Frame& fr);
  void OnDelivery(int64_t sid, const mqtt::Publish& p, uint64_t now);
  void Publish(uint64_t now);
  void Lost(uint64_t now, const char* why);
  bool Finished(uint64_t now);
  void Drop();
  bool TcpRead();
  bool TcpFlush();
  bool OpenUdp();
  bool QuicRead(uint64_t now);
  void QuicWrite(uint64_t now);

  Bench* b_;
  uint32_t index_;
  std::string client_id_, topic_;
  uint64_t publisher_id_;
  RateController rc_;
  uint64_t seq_ = 0, opened_at_ = 0, next_ping_ = UINT64_MAX, ping_sent_ = 0;
  bool connected_ = false, streams_open_ = false;
  bool buffer_full_ = false;  // the last Publish stopped at the 1 MiB send-buffer bound
  bool was_up_ = false;       // got a CONNACK at least once
  int64_t ctrl_ = 0;          // the control stream (QUIC: the first one opened)
  // What a packet handler decided, done once the read that delivered it returns (the
  // connection must not go away under its own callback).
  enum class Finish : uint8_t { kNone, kLost, kCycle } finish_ = Finish::kNone;
  const char* why_ = "";
  std::vector<int64_t> data_;
  std::vector<std::pair<int64_t, mqtt::Framer>> framers_;
  absl::flat_hash_set<uint16_t> qos2_pending_;  // sub: PUBREC sent, PUBREL not yet in
  // QUIC: a connected UDP socket of its own, with no buffers of its own (there may be
  // 10,000: reads go through the shared scratch buffer).
  std::unique_ptr<quic::Connection> quic_;
  quic::Path path_;
  // The socket (UDP or TCP); TLS over TCP
  int fd_ = -1;
  std::unique_ptr<quic::TlsStream> tls_;
  bool tls_done_ = false;
  std::vector<uint8_t> tx_;
  size_t tx_off_ = 0;
};

class Bench {
 public:
  explicit Bench(const Options& o) : o(o) {}
  int Run();

  const Options o;
  quic::Address remote;
  std::unique_ptr<quic::TlsContext> tls;
  quic::TransportConfig transport;
  std::optional<quic::ResumptionTicket> ticket;
  uint64_t run_id = 0;
  int epfd = -1;
  std::vector<uint8_t> scratch = std::vector<uint8_t>(64 * 1500), payload, encoded;
  std::vector<std::vector<uint8_t>> batch;  // a publisher's burst, per data stream
  Counters c;
  Histogram latency{3}, window_latency{2}, ping_rtt{3}, connect_time{3};
  SequenceBook book;
  uint64_t start = 0, steady = 0, end = UINT64_MAX, first_delivery = 0, last_delivery = 0;
  uint64_t up = 0;       // connections with CONNACK now
  uint64_t ever_up = 0;  // connections that got a CONNACK at least once
  bool ending = false;
  const bool shared = o.topic.rfind("$share/", 0) == 0;

  double ConnRate() const {
    if (o.mode != "pub") return 0;
    return o.conn_rate >= 0 ? o.conn_rate : o.rate / o.conns;
  }
  void Schedule(Conn& conn, uint32_t index);
  void Watch(Conn& conn, uint32_t index, bool out);

 private:
  void Report(uint64_t now);
  Json Summary(uint64_t now);

  std::vector<std::unique_ptr<Conn>> conns_;
  using Entry = std::pair<uint64_t, uint32_t>;
  std::vector<Entry> due_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> timers_;
  Json series_ = Json::array();
  Counters last_;
  uint64_t last_cpu_ = 0, last_report_ = 0, steady_cpu_ = 0, start_cpu_ = 0;
  Counters at_steady_;
};

Conn::Conn(Bench* b, uint32_t index) : b_(b), index_(index) {
  const Options& o = b->o;
  client_id_ = o.id.empty() ? "qbench-" + o.mode + "-" + std::to_string(::getpid()) + "-" + std::to_string(index)
               : o.id.find("%i") != std::string::npos ? Expand(o.id, int(index))
               : o.conns == 1 ? o.id : o.id + "-" + std::to_string(index);
  topic_ = Expand(o.topic, int(index));
  publisher_id_ = b->run_id << 32 | index;
}

uint64_t Conn::Buffered(int64_t sid) const {
  if (quic_) return quic_->BufferedBytes(sid);
  return tx_.size() - tx_off_ + (tls_ ? tls_->pending_out() : 0);
}

void Conn::Send(int64_t sid, const mqtt::Packet& p) {
  if (quic_) {
    b_->encoded.clear();
    if (!mqtt::EncodeTo(p, mqtt::Version::k5, b_->encoded)) return;
    (void)quic_->Send(sid, quic::Buffer::Copy(b_->encoded));
  } else {
    (void)mqtt::EncodeTo(p, mqtt::Version::k5, tx_);  // appends
  }
}

bool Conn::Open(uint64_t now) {
  Drop();
  state = State::kConnecting;
  opened_at_ = now;
  connected_ = streams_open_ = tls_done_ = false;
  finish_ = Finish::kNone;
  inflight = 0;  // sequence numbers continue across reconnects
  framers_.clear();
  data_.clear();
  ctrl_ = 0;
  qos2_pending_.clear();
  const Options& o = b_->o;
  if (o.transport == "quic") {
    if (!OpenUdp()) return false;
    const quic::ResumptionTicket* t = o.resume && b_->ticket ? &*b_->ticket : nullptr;
    auto q = quic::Connection::Connect(*b_->tls, b_->transport, path_, this, now, t);
    if (!q.ok()) return false;
    quic_ = std::move(*q);
    if (o.zero_rtt && quic_->early_data_possible()) OpenStreamsAndConnect();
  } else {
    fd_ = ::socket(b_->remote.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) return false;
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(fd_, b_->remote.sa(), b_->remote.len) != 0 && errno != EINPROGRESS) return false;
    if (b_->tls) {
      auto t = quic::TlsStream::Create(*b_->tls, fd_);
      if (!t.ok()) return false;
      tls_ = std::move(*t);
    } else {
      tls_done_ = true;
      OpenStreamsAndConnect();
    }
  }
  // TCP: writable once connected. Then the first flight at once (a new QUIC connection's
  // only timer is its handshake timeout).
  b_->Watch(*this, index_, !quic_);
  Service(now);
  return true;
}

// A UDP socket connected to the server (the kernel picks the source address and port, and
// delivers only the server's datagrams to it).
bool Conn::OpenUdp() {
  fd_ = ::socket(b_->remote.storage.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return false;
  const int buf = b_->o.conns > 100 ? 256 << 10 : 4 << 20;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  quic::Address local;
  local.len = sizeof(local.storage);
  if (::connect(fd_, b_->remote.sa(), b_->remote.len) != 0 || ::getsockname(fd_, local.sa(), &local.len) != 0)
    return false;
  path_ = quic::Path{local, b_->remote};
  return true;
}

// Every datagram queued, into the connection; false once it is finished.
bool Conn::QuicRead(uint64_t now) {
  for (;;) {
    const ssize_t n = ::recv(fd_, b_->scratch.data(), b_->scratch.size(), MSG_DONTWAIT);
    if (n < 0) return true;  // EAGAIN; an ICMP error shows as a timeout later
    if (!quic_->Read(path_, std::span<const uint8_t>(b_->scratch.data(), size_t(n)), now)) return false;
    if (finish_ != Finish::kNone) return true;
  }
}

void Conn::OpenStreamsAndConnect() {
  if (streams_open_) return;
  const Options& o = b_->o;
  if (quic_) {
    auto ctrl = quic_->OpenStream();
    if (!ctrl.ok()) return;  // no credit yet: at handshake completion
    ctrl_ = *ctrl;
    for (int i = 0; i < o.streams; ++i) {
      auto s = quic_->OpenStream();
      if (!s.ok()) break;
      data_.push_back(*s);
    }
  }
  if (data_.empty()) data_.push_back(0);
  streams_open_ = true;
  mqtt::Connect c;
  c.version = mqtt::Version::k5;
  c.client_id = client_id_;
  c.keep_alive = uint16_t(o.keepalive);
  Send(ctrl_, c);
}

void Conn::OnHandshakeConfirmed() { OpenStreamsAndConnect(); }

void Conn::OnStreamData(int64_t sid, std::span<const uint8_t> data, bool) {
  mqtt::Framer* f = nullptr;
  for (auto& [id, fr] : framers_)
    if (id == sid) f = &fr;
  if (f == nullptr) f = &framers_.emplace_back(sid, mqtt::Framer()).second;
  (void)f->Feed(data, [&](const mqtt::Frame& fr) {
    OnPacket(sid, fr);
    return true;
  });
}

void Conn::OnPacket(int64_t sid, const mqtt::Frame& fr) {
  const uint64_t now = Now();
  mqtt::Packet p;
  if (!mqtt::Decode(fr.header, fr.body, mqtt::Version::k5, &p).ok()) return;
  Counters& c = b_->c;
  if (auto* ack = std::get_if<mqtt::Connack>(&p)) {
    if (ack->reason != mqtt::ReasonCode::kSuccess) {
      finish_ = Finish::kLost;
      why_ = "CONNACK refused";
      return;
    }
    connected_ = true;
    state = State::kUp;
    // With 0-RTT the CONNACK may come before the handshake is confirmed: counted here.
    if (quic_ && quic_->resumed()) ++c.resumed;
    if (quic_ && b_->o.zero_rtt && quic_->early_data_possible())
      (quic_->early_data_accepted() ? c.early_accepted : c.early_rejected)++;
    ++b_->up;
    if (!was_up_) ++b_->ever_up;
    was_up_ = true;
    ++c.connects;
    b_->connect_time.Record(now - opened_at_);
    if (b_->o.mode == "connect") {
      if (quic_ && quic_->ticket()) b_->ticket = quic_->ticket();
      finish_ = Finish::kCycle;
      return;
    }
    // PINGREQs every keepalive/2, each connection at its own phase.
    const uint64_t every = uint64_t(b_->o.keepalive) * kSecond / 2;
    next_ping_ = now + every / 2 + (uint64_t(index_) * 7919 % 1000) * every / 2000;
    if (b_->o.mode == "sub") {
      mqtt::Subscribe s;
      s.packet_id = 1;
      s.subscriptions.push_back(mqtt::Subscription{topic_, mqtt::QoS(b_->o.qos)});
      Send(data_[0], s);
    } else {
      // The schedule starts now, at this connection's phase within one interval.
      const double r = b_->ConnRate();
      const uint64_t phase = r > 0 ? uint64_t(double(index_ % 1000) / 1000.0 * 1e9 / r) : 0;
      rc_ = RateController(r, now + phase);
    }
  } else if (auto* pub = std::get_if<mqtt::Publish>(&p)) {
    OnDelivery(sid, *pub, now);
  } else if (auto* ack = std::get_if<mqtt::PubAck>(&p)) {
    if (ack->type == mqtt::PacketType::kPubrec && ack->reason == mqtt::ReasonCode::kSuccess) {
      mqtt::PubAck rel;
      rel.type = mqtt::PacketType::kPubrel;
      rel.packet_id = ack->packet_id;
      Send(sid, rel);
      return;
    } else if (ack->type == mqtt::PacketType::kPubrel) {
      qos2_pending_.erase(ack->packet_id);
      mqtt::PubAck comp;
      comp.type = mqtt::PacketType::kPubcomp;
      comp.packet_id = ack->packet_id;
      Send(sid, comp);
      return;
    }
    // PUBACK, PUBCOMP, or a PUBREC with a failure reason (the exchange ends there).
    ++c.acked;
    if (inflight > 0) --inflight;
    if (ack->reason != mqtt::ReasonCode::kSuccess && ack->reason != mqtt::ReasonCode::kNoMatchingSubscribers)
      ++c.ack_failed;
  } else if (std::holds_alternative<mqtt::Pingresp>(p)) {
    ++c.pongs;
    if (ping_sent_) b_->ping_rtt.Record(now - ping_sent_);
    ping_sent_ = 0;
  } else if (std::holds_alternative<mqtt::Suback>(p)) {
    ++c.subscribed;
  } else if (std::holds_alternative<mqtt::Disconnect>(p)) {
    finish_ = Finish::kLost;
    why_ = "DISCONNECT from the server";
  }
}

void Conn::OnDelivery(int64_t sid, const mqtt::Publish& p, uint64_t now) {
  if (p.qos == mqtt::QoS::k1) {
    mqtt::PubAck ack;
    ack.packet_id = p.packet_id;
    Send(sid, ack);
  } else if (p.qos == mqtt::QoS::k2) {
    mqtt::PubAck rec;
    rec.type = mqtt::PacketType::kPubrec;
    rec.packet_id = p.packet_id;
    Send(sid, rec);
    if (!qos2_pending_.insert(p.packet_id).second) return;  // a resend before PUBREL
  }
  ++b_->c.received;
  if (b_->first_delivery == 0) b_->first_delivery = now;
  b_->last_delivery = now;
  if (p.payload.size() < kHeader) return;
  uint64_t seq, t, pub;
  std::memcpy(&seq, p.payload.data(), 8);
  std::memcpy(&t, p.payload.data() + 8, 8);
  std::memcpy(&pub, p.payload.data() + 16, 8);
  if (now > t) {
    b_->latency.Record(now - t);
    b_->window_latency.Record(now - t);
  }
  // Members of one $share group split each publisher's stream: checked as one subscriber.
  b_->book.Observe(pub, b_->shared ? 0 : index_, seq);
}

void Conn::Publish(uint64_t now) {
  const Options& o = b_->o;
  const uint64_t due = rc_.Due(now);
  uint64_t n = 0;
  bool blocked = false;
  std::vector<uint8_t>& payload = b_->payload;
  // One send time per burst (they leave together), and over QUIC one buffer per stream and
  // burst: the generator's cost per message is what limits how hard it can push.
  const uint64_t t = Now();
  auto& batch = b_->batch;
  if (quic_) batch.resize(data_.size());
  while (n < due) {
    const size_t slot = seq_ % data_.size();
    const int64_t sid = data_[slot];
    // Back-pressure: the window of unacknowledged messages, or 1 MiB queued.
    buffer_full_ = Buffered(sid) + (quic_ ? batch[slot].size() : 0) > kMaxBufferedBytes;
    if (buffer_full_ || (o.qos > 0 && inflight >= uint64_t(o.inflight))) {
      blocked = true;
      ++b_->c.blocked;
      break;
    }
    std::memcpy(payload.data(), &seq_, 8);
    std::memcpy(payload.data() + 8, &t, 8);
    std::memcpy(payload.data() + 16, &publisher_id_, 8);
    mqtt::Publish p;
    p.topic = topic_;
    p.qos = mqtt::QoS(o.qos);
    p.payload = payload;
    if (o.qos > 0) {
      p.packet_id = uint16_t(seq_ % 65535 + 1);
      ++inflight;
    }
    if (quic_) {
      (void)mqtt::EncodeTo(p, mqtt::Version::k5, batch[slot]);  // appends
    } else {
      Send(sid, p);
    }
    ++seq_;
    ++n;
  }
  if (quic_) {
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].empty()) continue;
      (void)quic_->Send(data_[i], quic::Buffer::Copy(batch[i]));
      batch[i].clear();
    }
  }
  rc_.Sent(n, now);
  b_->c.sent += n;
  rc_.Behind(now, blocked);
}

void Conn::Lost(uint64_t now, const char* why) {
  if (state == State::kGone || state == State::kIdle) return;
  if (state == State::kUp) {
    --b_->up;
    ++b_->c.reconnects;
  } else {
    ++b_->c.connect_failures;
  }
  if (b_->c.reconnects + b_->c.connect_failures <= 5)
    std::fprintf(stderr, "qbench: connection %u: %s\n", index_, why);
  Drop();
  state = State::kIdle;
  reopen_at = now + kSecond;
}

uint64_t Conn::Unsent() const {
  if (!quic_) return Buffered(0);
  uint64_t n = quic_->UnsentBytes(ctrl_);
  for (int64_t sid : data_)
    if (sid != ctrl_) n += quic_->UnsentBytes(sid);
  return n;
}

void Conn::SettleSchedule(uint64_t at) {
  if (connected_) rc_.Behind(at, buffer_full_ || inflight >= uint64_t(b_->o.inflight));
}

// Acts on what a packet handler decided; true when the connection is closed now.
bool Conn::Finished(uint64_t now) {
  if (finish_ == Finish::kNone) return false;
  if (finish_ == Finish::kLost) {
    Lost(now, why_);
  } else {
    Close(now);  // connect mode: CONNACK in, close, and again
    state = State::kIdle;
    reopen_at = now;
  }
  return true;
}

void Conn::Drop() {
  if (fd_ >= 0 && b_->epfd >= 0) ::epoll_ctl(b_->epfd, EPOLL_CTL_DEL, fd_, nullptr);
  quic_.reset();
  if (tls_) tls_->Bye();
  tls_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  tx_.clear();
  tx_off_ = 0;
  epoll_out = false;
}

void Conn::Close(uint64_t now) {
  if (state == State::kUp) --b_->up;
  if (connected_) Send(ctrl_, mqtt::Disconnect{});
  if (quic_) {
    QuicWrite(now);
    quic_->Close(0);
    QuicWrite(now);
  } else if (fd_ >= 0) {
    (void)TcpFlush();
  }
  Drop();
  state = State::kGone;
}

void Conn::QuicWrite(uint64_t now) {
  for (int i = 0; i < 64; ++i) {
    const size_t n = quic_->Write(now, b_->scratch, 64, [&](const quic::Path&, std::span<const uint8_t> d, size_t seg) {
      // Datagrams back to back: one sendmsg, cut into `seg`-byte datagrams by the kernel (GSO).
      iovec iov{const_cast<uint8_t*>(d.data()), d.size()};
      msghdr m{};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(uint16_t))] = {};
      if (d.size() > seg) {
        m.msg_control = ctrl;
        m.msg_controllen = sizeof(ctrl);
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t s16 = uint16_t(seg);
        std::memcpy(CMSG_DATA(c), &s16, sizeof(s16));
      }
      (void)::sendmsg(fd_, &m, MSG_DONTWAIT);  // a full buffer drops: QUIC retransmits
    });
    if (n < 64) break;
  }
}

bool Conn::TcpRead() {
  auto feed = [&](std::span<const uint8_t> d) {
    OnStreamData(0, d, false);
    return true;
  };
  if (tls_) {
    quic::TlsStream::Result r;
    do {
      r = tls_->Read(b_->scratch, 1 << 20, feed);
    } while (r == quic::TlsStream::Result::kOk && finish_ == Finish::kNone);
    return r == quic::TlsStream::Result::kAgain;
  }
  for (;;) {
    const ssize_t n = ::recv(fd_, b_->scratch.data(), b_->scratch.size(), MSG_DONTWAIT);
    if (n > 0) {
      feed(std::span<const uint8_t>(b_->scratch.data(), size_t(n)));
      if (finish_ != Finish::kNone) return true;
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
}

bool Conn::TcpFlush() {
  if (tls_ && tls_->Flush() == quic::TlsStream::Result::kFailed) return false;
  while (tx_off_ < tx_.size()) {
    const std::span<const uint8_t> rest(tx_.data() + tx_off_, tx_.size() - tx_off_);
    const ssize_t n = tls_ ? tls_->Write(rest) : ::send(fd_, rest.data(), rest.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && !tls_ && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) return false;
    if (n == 0) break;
    tx_off_ += size_t(n);
  }
  if (tx_off_ == tx_.size()) tx_.clear(), tx_off_ = 0;
  return true;
}

void Conn::Service(uint64_t now) {
  if (state == State::kIdle || state == State::kGone) return;
  const Options& o = b_->o;
  if (quic_) {
    bool alive = QuicRead(now);
    if (Finished(now)) return;
    if (alive && quic_->Expiry() <= now && !quic_->HandleExpiry(now)) alive = false;
    if (!alive) {
      const char* why = quic_->timeout_reason();
      Lost(now, *why ? why : "the QUIC connection closed");
      return;
    }
  } else {
    if (tls_ && !tls_done_) {
      const quic::TlsStream::Result r = tls_->Handshake();
      if (r == quic::TlsStream::Result::kFailed) {
        Lost(now, ("TLS handshake: " + tls_->error()).c_str());
        return;
      }
      if (r == quic::TlsStream::Result::kOk) {
        tls_done_ = true;
        OpenStreamsAndConnect();
      }
    }
    const bool open = !tls_done_ || TcpRead();
    if (Finished(now)) return;
    if (!open) {
      Lost(now, "the TCP connection closed");
      return;
    }
  }
  if (state == State::kConnecting && now - opened_at_ > 10 * kSecond) {
    Lost(now, "no CONNACK within 10 s");
    return;
  }
  if (connected_) {
    if (o.mode == "pub" && !b_->ending) Publish(now);
    if (now >= next_ping_) {
      if (ping_sent_ && now - ping_sent_ > uint64_t(o.keepalive) * kSecond) ++b_->c.ping_timeouts, ping_sent_ = 0;
      if (!ping_sent_) {
        Send(ctrl_, mqtt::Pingreq{});
        ping_sent_ = now;
        ++b_->c.pings;
      }
      next_ping_ = now + uint64_t(o.keepalive) * kSecond / 2;
    }
  }
  if (quic_) {
    QuicWrite(now);
  } else {
    if (tls_done_ && !TcpFlush()) {
      Lost(now, "write failed");
      return;
    }
    // The flush may have drained what held the schedule back; if it drained all of it,
    // no EPOLLOUT comes to say so, and a stale flag would keep the schedule's timer off.
    if (buffer_full_ && Buffered(0) <= kMaxBufferedBytes) buffer_full_ = false;
    const bool want_out = (tls_done_ && Buffered(0) > 0) || (tls_ && tls_->wants_write());
    if (want_out != epoll_out) b_->Watch(*this, index_, want_out);
  }
}

uint64_t Conn::Deadline() const {
  if (state == State::kIdle) return b_->ending ? UINT64_MAX : reopen_at;  // no reopening at the end
  if (state == State::kGone) return UINT64_MAX;
  uint64_t d = quic_ ? quic_->Expiry() : UINT64_MAX;
  if (state == State::kConnecting) d = std::min(d, opened_at_ + 10 * kSecond + 1);
  if (connected_) {
    d = std::min(d, next_ping_);
    const bool window_open = b_->o.qos == 0 || inflight < uint64_t(b_->o.inflight);
    // Sends wake the loop at most every 50 us (a burst of what fell due meanwhile): a fast
    // schedule must not turn the generator into a spinning loop. A publisher held back by its
    // send buffer waits for acks to drain it (they wake it through epoll).
    if (b_->o.mode == "pub" && !b_->ending && window_open && !buffer_full_ && rc_.active())
      d = std::min(d, rc_.next() + 50'000);
  }
  return d;
}

void Bench::Watch(Conn& conn, uint32_t index, bool out) {
  epoll_event ev{};
  ev.events = out ? uint32_t(EPOLLIN | EPOLLOUT) : uint32_t(EPOLLIN);
  ev.data.u32 = index;
  if (::epoll_ctl(epfd, EPOLL_CTL_MOD, conn.fd(), &ev) != 0) ::epoll_ctl(epfd, EPOLL_CTL_ADD, conn.fd(), &ev);
  conn.epoll_out = out;
}

void Bench::Schedule(Conn& conn, uint32_t index) {
  const uint64_t d = conn.Deadline();
  if (d < conn.heap_deadline) {
    conn.heap_deadline = d;
    timers_.emplace(d, index);
  }
}

void Bench::Report(uint64_t now) {
  const uint64_t cpu = CpuNs();
  const double wall = double(now - last_report_);
  const double cpu_pct = wall > 0 ? 100.0 * double(cpu - last_cpu_) / wall : 0;
  Json s;
  s["t"] = double(now - start) / 1e9;
  s["conns_up"] = up;
  s["sent"] = c.sent - last_.sent;
  s["acked"] = c.acked - last_.acked;
  s["received"] = c.received - last_.received;
  s["latency_p50_ms"] = double(window_latency.ValueAtPercentile(50)) / 1e6;
  s["latency_p99_ms"] = double(window_latency.ValueAtPercentile(99)) / 1e6;
  s["latency_max_ms"] = double(window_latency.max()) / 1e6;
  s["connects"] = c.connects - last_.connects;
  s["pings"] = c.pings - last_.pings;
  s["pongs"] = c.pongs - last_.pongs;
  s["reconnects"] = c.reconnects - last_.reconnects;
  s["cpu_pct"] = cpu_pct;
  std::fprintf(stderr,
               "qbench %s %5.0fs: up %6lu  sent %8lu/s  acked %8lu/s  received %8lu/s  p99 %.2f ms  "
               "connects %lu/s  reconnects %lu  cpu %3.0f%%\n",
               o.mode.c_str(), s["t"].get<double>(), up, c.sent - last_.sent, c.acked - last_.acked,
               c.received - last_.received, s["latency_p99_ms"].get<double>(), c.connects - last_.connects,
               c.reconnects, cpu_pct);
  series_.push_back(std::move(s));
  window_latency.Reset();
  last_ = c;
  last_cpu_ = cpu;
  last_report_ = now;
}

Json Bench::Summary(uint64_t now) {
  // From the steady phase (all connected); a run stopped before it counts from the start.
  const uint64_t from = steady ? steady : start;
  const uint64_t until = std::max(from, std::min(now, end));
  const double secs = std::max(1e-3, double(until - from) / 1e9);
  const double cpu_pct = 100.0 * double(CpuNs() - (steady ? steady_cpu_ : start_cpu_)) / std::max(1e6, double(now - from));
  auto ms = [](uint64_t ns) { return double(ns) / 1e6; };
  auto hist = [&](const Histogram& h) {
    Json j;
    j["count"] = h.count();
    j["p50_ms"] = ms(h.ValueAtPercentile(50));
    j["p90_ms"] = ms(h.ValueAtPercentile(90));
    j["p99_ms"] = ms(h.ValueAtPercentile(99));
    j["p999_ms"] = ms(h.ValueAtPercentile(99.9));
    j["max_ms"] = ms(h.max());
    return j;
  };
  Json j;
  j["mode"] = o.mode;
  j["transport"] = o.transport;
  j["conns"] = o.conns;
  j["qos"] = o.qos;
  j["size"] = o.size;
  j["seconds"] = secs;
  j["ramp_seconds"] = steady ? double(steady - start) / 1e9 : -1.0;
  j["conns_up"] = up;
  // Every connection got its CONNACK (at some point; reconnects are counted apart).
  j["connected"] = ever_up >= uint64_t(o.conns);
  j["connects"] = c.connects;
  j["connect_failures"] = c.connect_failures;
  j["reconnects"] = c.reconnects;
  j["connect_time"] = hist(connect_time);
  j["pings"] = c.pings;
  j["pongs"] = c.pongs;
  j["ping_timeouts"] = c.ping_timeouts;
  j["ping_rtt"] = hist(ping_rtt);
  j["cpu_pct"] = cpu_pct;
  // Who was the limit: a schedule missed while the appliance took all it was offered (no
  // back-pressure) is qbench's own; so is a whole core used.
  std::string limit = "none", why;
  // A whole core used says it for a subscriber or a handshake loop (they wait in epoll when
  // they can); a publisher's schedule says it for a publisher (below).
  if (cpu_pct >= 90 && o.mode != "pub") {
    limit = "qbench";
    why = "qbench used " + std::to_string(int(cpu_pct)) + "% of a core";
  }
  if (o.mode == "pub") {
    uint64_t skipped_self = 0, skipped_bp = 0, max_late = 0;
    for (auto& conn : conns_) {
      conn->SettleSchedule(until);
      skipped_self += conn->rate().skipped_self();
      skipped_bp += conn->rate().skipped_backpressure();
      max_late = std::max(max_late, conn->rate().max_late_ns());
    }
    j["sent"] = c.sent;
    j["acked"] = c.acked;
    j["ack_failed"] = c.ack_failed;
    j["rate"] = double(c.sent - at_steady_.sent) / secs;
    j["offered_rate"] = ConnRate() * o.conns;
    j["blocked"] = c.blocked;
    j["skipped_backpressure"] = skipped_bp;
    j["skipped_self"] = skipped_self;
    j["max_late_ms"] = ms(max_late);
    // Missed sends while the appliance pushed back are its limit; missed sends without
    // back-pressure, or a whole core, are qbench's.
    if (skipped_self > c.sent / 100) {
      limit = "qbench";
      why = std::to_string(skipped_self) + " sends missed their schedule by over 1 s without back-pressure";
    } else if (cpu_pct >= 90 && max_late > 50'000'000) {
      limit = "qbench";
      why = "qbench used " + std::to_string(int(cpu_pct)) + "% of a core and sends ran up to " +
            std::to_string(max_late / 1'000'000) + " ms late";
    } else if (limit == "none" && skipped_bp > c.sent / 100) {
      limit = "appliance";
      why = std::to_string(skipped_bp) + " sends dropped from the schedule under back-pressure (a full window or send buffer)";
    }
  } else if (o.mode == "sub") {
    const SequenceBook::Totals t = book.Sum();
    j["subscribed"] = c.subscribed >= uint64_t(o.conns);
    j["received"] = c.received;
    j["publishers_seen"] = t.streams;
    j["unique"] = t.unique;
    j["duplicates"] = t.duplicates;
    j["missing"] = t.missing;
    j["reordered"] = t.reordered;
    j["too_old"] = t.too_old;
    j["rate"] = double(c.received - at_steady_.received) / secs;
    // From the first message to the last: what a rate over whole seconds of the series
    // rounds (5.06 M over 7 or 8 s is 723 k or 632 k).
    j["delivering_seconds"] = last_delivery > first_delivery ? double(last_delivery - first_delivery) / 1e9 : 0.0;
    j["latency"] = hist(latency);
    j["latency_p50_ms"] = ms(latency.ValueAtPercentile(50));
    j["latency_p99_ms"] = ms(latency.ValueAtPercentile(99));
  } else {
    j["rate"] = double(c.connects - at_steady_.connects) / secs;
    j["resumed"] = c.resumed;
    j["early_data_accepted"] = c.early_accepted;
    j["early_data_rejected"] = c.early_rejected;
  }
  j["limit"] = limit;
  j["limit_reason"] = why;
  if (limit == "qbench")
    std::fprintf(stderr, "qbench: the generator was the limit of this run (%s): the figure is qbench's, not the appliance's\n",
                 why.c_str());
  j["series"] = series_;
  return j;
}

int Bench::Run() {
  remote = ServerAddress(o.server);
  if (remote.empty()) return 2;
  {
    uint8_t r[4];
    quic::RandomBytes(r, sizeof(r));
    std::memcpy(&run_id, r, sizeof(r));
  }
  if (o.transport != "tcp") {
    quic::TlsConfig tc;
    tc.stream = o.transport == "tls";
    tc.cacertfile = o.ca;
    tc.server_name = o.server_name;
    auto t = quic::TlsContext::Create(quic::TlsContext::Side::kClient, tc);
    if (!t.ok()) {
      std::fprintf(stderr, "qbench: %s\n", std::string(t.status().message()).c_str());
      return 1;
    }
    tls = std::move(*t);
  }
  transport.idle_timeout_ns = uint64_t(std::max(30, o.keepalive * 2)) * kSecond;
  payload.assign(o.size, 'q');
  // One descriptor per connection (two for nothing else): as many as the hard limit allows.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (uint64_t(o.conns) + 64 > rl.rlim_cur) {
    std::fprintf(stderr, "qbench: %d connections need more descriptors than the limit (%lu)\n", o.conns,
                 uint64_t(rl.rlim_cur));
    return 2;
  }
  epfd = ::epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < o.conns; ++i) conns_.push_back(std::make_unique<Conn>(this, uint32_t(i)));
  start = last_report_ = Now();
  start_cpu_ = last_cpu_ = CpuNs();
  uint64_t next_report = start + kSecond;
  RateController ramp(o.ramp, start);
  uint32_t opened = 0;
  uint64_t drain_until = 0;
  std::vector<epoll_event> events(1024);
  while (true) {
    uint64_t now = Now();
    // Phases: the ramp; steady once every connection is up (or 10 s after the ramp: a
    // handshake that has not finished by then has timed out, and --seconds must still bound
    // a run against a server that never answers);
    // the end; a publisher's drain of its acks, or at QoS 0 of what it still has queued
    // (at most 10 s); done.
    if (!steady && opened == uint32_t(o.conns) &&
        (up == uint64_t(o.conns) || o.mode == "connect" ||
         now > start + uint64_t(double(o.conns) / o.ramp * 1e9) + 10 * kSecond)) {
      steady = now;
      steady_cpu_ = CpuNs();
      at_steady_ = c;
      if (o.seconds > 0) end = now + uint64_t(o.seconds * 1e9);
      if (up < uint64_t(o.conns) && o.mode != "connect")
        std::fprintf(stderr, "qbench: only %lu of %d connections came up\n", up, o.conns);
    }
    const bool quiet = o.quiet > 0 && last_delivery && now > last_delivery + uint64_t(o.quiet * 1e9);
    if ((g_stop || now >= end || quiet) && !ending) {
      ending = true;
      end = std::min(end, now);
      drain_until = o.mode == "pub" && !g_stop ? now + 10 * kSecond : now;
    }
    if (ending) {
      // QoS 1/2: the acks; QoS 0: what is still queued (an appliance that holds its
      // publishers back leaves them with a backlog).
      uint64_t pending = 0;
      for (auto& conn : conns_)
        if (conn->state == Conn::State::kUp) pending += o.qos > 0 ? conn->inflight : conn->Unsent();
      if (pending == 0 || now >= drain_until) break;
    }
    for (uint64_t n = ramp.Due(now); n > 0 && opened < uint32_t(o.conns) && !ending; --n) {
      Conn& conn = *conns_[opened];
      if (!conn.Open(now)) {
        ++c.connect_failures;
        conn.state = Conn::State::kIdle;
        conn.reopen_at = now + kSecond;
      }
      Schedule(conn, opened);
      ramp.Sent(1, now);
      ++opened;
    }
    // Only what is due now, each once: a connection rescheduled into the past by its own
    // Service waits for the next pass (with a fresh clock; epoll runs in between).
    due_.clear();
    while (!timers_.empty() && timers_.top().first <= now) {
      due_.push_back(timers_.top());
      timers_.pop();
    }
    for (const auto& [d, i] : due_) {
      now = Now();
      Conn& conn = *conns_[i];
      if (d != conn.heap_deadline) continue;  // superseded by an earlier entry
      conn.heap_deadline = UINT64_MAX;
      if (conn.state == Conn::State::kIdle && !ending && conn.reopen_at <= now) {
        if (!conn.Open(now)) {
          ++c.connect_failures;
          conn.state = Conn::State::kIdle;
          conn.reopen_at = now + kSecond;
        }
      }
      conn.Service(now);
      Schedule(conn, i);
    }
    if (now >= next_report) {
      Report(now);
      next_report += kSecond;
    }
    uint64_t wake = std::min({next_report, ending ? now + kSecond / 100 : end,
                              opened < uint32_t(o.conns) ? ramp.next() : UINT64_MAX,
                              timers_.empty() ? UINT64_MAX : timers_.top().first});
    now = Now();
    const uint64_t wait = wake > now ? wake - now : 0;
    const timespec ts{time_t(wait / kSecond), long(wait % kSecond)};
    const int n = ::epoll_pwait2(epfd, events.data(), int(events.size()), &ts, nullptr);
    now = Now();
    for (int k = 0; k < n; ++k) {
      const uint32_t i = events[size_t(k)].data.u32;
      Conn& conn = *conns_[i];
      conn.Service(now);
      Schedule(conn, i);
    }
  }
  const uint64_t now = Now();
  if (now > last_report_ + kSecond / 10) Report(now);  // the last part of a second, too
  Json summary = Summary(now);
  for (auto& conn : conns_) conn->Close(now);
  const std::string text = summary.dump();
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
  if (!o.json.empty()) std::ofstream(o.json) << text << "\n";
  return up == 0 && c.connects == 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) {
    std::fprintf(stderr, "usage: qbench pub|sub|connect --server IP:PORT [options] (see tools/qbench/qbench.cc)\n");
    return 2;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  Bench b(o);
  return b.Run();
}
