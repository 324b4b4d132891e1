// qbench: an MQTT load generator and checker on qbridge's own QUIC, TLS and MQTT code:
// MQTT over QUIC (EMQX's wire model: CONNECT on stream 0, PUBLISH and SUBSCRIBE on data
// streams) over kernel UDP, or MQTT over TCP, plain or TLS (--transport tcp|tls).
//
//   qbench pub --server IP:PORT [--transport quic|tcp|tls] [--ca FILE] [--server-name N]
//              --topic T [--qos 0|1] [--rate MSGS_PER_S] [--size BYTES] [--streams N]
//              [--seconds S] [--id ID]
//   qbench sub --server IP:PORT [--transport ...] [--ca FILE] [--server-name N]
//              --topic FILTER [--qos 0|1] [--seconds S] [--id ID]
//   qbench connect --server IP:PORT --transport tcp|tls [--ca FILE] [--seconds S]
//       connects, handshakes, sends CONNECT, waits for CONNACK and closes, again and again,
//       one at a time: connections (TLS handshakes) per second.
//
// --ca is required for quic and tls (the server's certificate is verified against it and
// --server-name, "localhost" by default).
//
// Every payload starts with the publisher's sequence number and its send time (same-host
// CLOCK_MONOTONIC), so `sub` reports loss (sequence numbers never seen), duplicates,
// reordering (several streams may interleave) and latency. Both print
// one line of live figures per second on stderr and a JSON summary on stdout at the end.
// Either stops at --seconds (0: at Ctrl-C or SIGTERM).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <netinet/tcp.h>
#include <sys/socket.h>

#include "absl/strings/numbers.h"
#include "dataplane/udp_socket.h"
#include "mqtt/codec.h"
#include "mqtt/framer.h"
#include "quic/connection.h"
#include "quic/tls.h"
#include "quic/tls_stream.h"

namespace {

using namespace qbridge;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

uint64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

struct Options {
  std::string mode;
  std::string transport = "quic";
  std::string server = "127.0.0.1:14567";
  std::string ca, server_name = "localhost", topic = "qbench/t", id;
  int qos = 0;
  double rate = 1000;
  size_t size = 64;
  int streams = 1;
  double seconds = 10;
};

bool ParseArgs(int argc, char** argv, Options* o) {
  if (argc < 2) return false;
  o->mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--server") o->server = v;
    else if (k == "--transport") o->transport = v;
    else if (k == "--ca") o->ca = v;
    else if (k == "--server-name") o->server_name = v;
    else if (k == "--topic") o->topic = v;
    else if (k == "--id") o->id = v;
    else if (k == "--qos") o->qos = std::atoi(v.c_str());
    else if (k == "--rate") o->rate = std::atof(v.c_str());
    else if (k == "--size") o->size = size_t(std::atol(v.c_str()));
    else if (k == "--streams") o->streams = std::atoi(v.c_str());
    else if (k == "--seconds") o->seconds = std::atof(v.c_str());
    else return false;
  }
  const bool transport_ok = o->transport == "quic" || o->transport == "tcp" || o->transport == "tls";
  const bool needs_ca = o->transport != "tcp";
  return (o->mode == "pub" || o->mode == "sub" || (o->mode == "connect" && o->transport != "quic")) &&
         transport_ok && (!needs_ca || !o->ca.empty()) && o->qos >= 0 && o->qos <= 1 && o->size >= 16 &&
         o->streams >= 1;
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

// The MQTT side, the same on every transport: CONNECT, SUBSCRIBE, the publisher's paced
// sends and the subscriber's checks, live figures and the summary.
class Client {
 public:
  explicit Client(const Options& o) : o_(o) {}
  virtual ~Client() = default;
  virtual int Run() = 0;

 protected:
  virtual void Send(int64_t sid, const mqtt::Packet& p) = 0;
  virtual uint64_t Buffered(int64_t sid) const = 0;

  void SendConnect() {
    mqtt::Connect c;
    c.version = mqtt::Version::k5;
    const std::string id = o_.id.empty() ? "qbench-" + o_.mode + "-" + std::to_string(::getpid()) : o_.id;
    id_ = id;
    c.client_id = id_;
    c.keep_alive = 30;
    Send(0, c);
  }

  int Fail(const std::string& why) {
    std::fprintf(stderr, "qbench: %s\n", why.c_str());
    failed_ = true;
    return 1;
  }

  void OnPacket(int64_t sid, const mqtt::Frame& fr) {
    mqtt::Packet p;
    if (!mqtt::Decode(fr.header, fr.body, mqtt::Version::k5, &p).ok()) return;
    if (auto* ack = std::get_if<mqtt::Connack>(&p)) {
      if (ack->reason != mqtt::ReasonCode::kSuccess) {
        Fail("CONNACK refused");
        return;
      }
      connected_ = true;
      next_ping_ = Now() + 10 * quic::kSecond;
      if (o_.mode == "sub") {
        mqtt::Subscribe s;
        s.packet_id = 1;
        s.subscriptions.push_back(mqtt::Subscription{o_.topic, mqtt::QoS(o_.qos)});
        Send(data_[0], s);
      }
    } else if (auto* pub = std::get_if<mqtt::Publish>(&p)) {
      OnDelivery(sid, *pub);
    } else if (auto* ack = std::get_if<mqtt::PubAck>(&p)) {
      if (ack->type == mqtt::PacketType::kPuback) {
        ++acked_;
        --inflight_;
        // A PUBACK with a failure reason (MQTT 5) is an answer, not a delivery: counted apart.
        if (ack->reason != mqtt::ReasonCode::kSuccess) ++ack_failed_;
      }
    } else if (std::holds_alternative<mqtt::Suback>(p)) {
      subscribed_ = true;
    }
  }

  void Publish(uint64_t now) {
    // At most 1,000 QoS 1 messages unacknowledged and 1 MiB queued per stream: back-pressure.
    const uint64_t interval = uint64_t(1e9 / std::max(o_.rate, 1.0));
    int budget = 1000;
    while (now >= next_send_ && budget-- > 0) {
      const int64_t sid = data_[seq_ % data_.size()];
      if (Buffered(sid) > (1u << 20) || (o_.qos == 1 && inflight_ >= 1000)) {
        ++blocked_;
        break;
      }
      std::vector<uint8_t> payload(o_.size, 'q');
      const uint64_t t = Now();
      std::memcpy(payload.data(), &seq_, 8);
      std::memcpy(payload.data() + 8, &t, 8);
      mqtt::Publish p;
      p.topic = o_.topic;
      p.qos = mqtt::QoS(o_.qos);
      p.payload = payload;
      if (o_.qos == 1) {
        p.packet_id = uint16_t(seq_ % 65535 + 1);
        ++inflight_;
      }
      Send(sid, p);
      ++seq_;
      next_send_ += interval;
    }
    if (now > next_send_ + quic::kSecond) next_send_ = now;  // do not burst to catch up
  }

  void OnDelivery(int64_t sid, const mqtt::Publish& p) {
    if (p.qos == mqtt::QoS::k1) {
      mqtt::PubAck ack;
      ack.packet_id = p.packet_id;
      Send(sid, ack);
    }
    ++received_;
    if (p.payload.size() < 16) return;
    uint64_t seq, t;
    std::memcpy(&seq, p.payload.data(), 8);
    std::memcpy(&t, p.payload.data() + 8, 8);
    const uint64_t now = Now();
    if (now > t) lat_.push_back(now - t);
    if (seq < next_expected_) {
      if (seen_.count(seq)) ++dups_;
      else ++reordered_;
    } else {
      if (seq > next_expected_) missing_ += seq - next_expected_;
      next_expected_ = seq + 1;
    }
    if (seen_.size() < 10'000'000) seen_.insert(seq);
  }

  double Pct(std::vector<uint64_t>& v, double q) {
    if (v.empty()) return 0;
    const size_t k = std::min(v.size() - 1, size_t(q * double(v.size())));
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return double(v[k]) / 1e6;
  }

  void Report(uint64_t elapsed) {
    if (o_.mode == "pub") {
      std::fprintf(stderr, "qbench pub %4.0fs: sent %8lu (%6lu/s) acked %8lu\n", double(elapsed) / 1e9,
                   seq_, seq_ - last_count_, acked_);
      last_count_ = seq_;
    } else {
      std::vector<uint64_t> win(lat_.begin() + long(std::min(lat_.size(), last_lat_)), lat_.end());
      std::fprintf(stderr, "qbench sub %4.0fs: received %8lu (%6lu/s) latency p50 %.2f ms p99 %.2f ms missing %lu\n",
                   double(elapsed) / 1e9, received_, received_ - last_count_, Pct(win, 0.5), Pct(win, 0.99),
                   missing_);
      last_count_ = received_;
      last_lat_ = lat_.size();
    }
  }

  void Summary(uint64_t elapsed) {
    const double s = double(elapsed) / 1e9;
    if (o_.mode == "pub") {
      std::printf("{\"mode\":\"pub\",\"connected\":%s,\"sent\":%lu,\"acked\":%lu,\"ack_failed\":%lu,"
                  "\"rate\":%.1f,\"blocked\":%lu}\n",
                  connected_ ? "true" : "false", seq_, acked_, ack_failed_, double(seq_) / s, blocked_);
    } else {
      std::printf("{\"mode\":\"sub\",\"connected\":%s,\"subscribed\":%s,\"received\":%lu,\"unique\":%zu,"
                  "\"duplicates\":%lu,\"missing\":%lu,\"reordered\":%lu,\"highest_seq\":%lu,"
                  "\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,\"rate\":%.1f}\n",
                  connected_ ? "true" : "false", subscribed_ ? "true" : "false", received_, seen_.size(),
                  dups_, next_expected_ - std::min<uint64_t>(next_expected_, seen_.size()), reordered_,
                  next_expected_, Pct(lat_, 0.5), Pct(lat_, 0.99),
                  double(received_) / s);
    }
    std::fflush(stdout);
  }

  Options o_;
  std::string id_;
  std::vector<int64_t> data_;
  std::map<int64_t, mqtt::Framer> framers_;
  bool connected_ = false, subscribed_ = false, closed_ = false, failed_ = false;
  uint64_t next_ping_ = 0;
  uint64_t next_send_ = 0, seq_ = 0, acked_ = 0, ack_failed_ = 0, inflight_ = 0, blocked_ = 0,
           last_count_ = 0;
  uint64_t received_ = 0, next_expected_ = 0, missing_ = 0, dups_ = 0, reordered_ = 0;
  size_t last_lat_ = 0;
  std::vector<uint64_t> lat_;
  std::set<uint64_t> seen_;
};

class QuicClient final : public Client, public quic::ConnectionEvents {
 public:
  using Client::Client;

  int Run() override {
    const quic::Address remote = ServerAddress(o_.server);
    if (remote.empty()) return 2;
    auto sock = dp::UdpSocket::Bind(quic::Address::FromIpPort(
        remote.storage.ss_family == AF_INET6 ? "::" : "0.0.0.0", 0));
    if (!sock.ok()) return Fail(std::string(sock.status().message()));
    quic::TlsConfig tc;
    tc.cacertfile = o_.ca;
    tc.server_name = o_.server_name;
    auto tls = quic::TlsContext::Create(quic::TlsContext::Side::kClient, tc);
    if (!tls.ok()) return Fail(std::string(tls.status().message()));
    // The kernel reports each datagram's destination (PKTINFO): dial from the source
    // address it picks towards the server, on our port.
    quic::Address local;
    {
      const int fd = ::socket(remote.storage.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      local.len = sizeof(local.storage);
      if (fd < 0 || ::connect(fd, remote.sa(), remote.len) != 0 ||
          ::getsockname(fd, local.sa(), &local.len) != 0) {
        if (fd >= 0) ::close(fd);
        return Fail("no route to the server");
      }
      ::close(fd);
      reinterpret_cast<sockaddr_in*>(&local.storage)->sin_port =
          reinterpret_cast<const sockaddr_in*>(&(*sock)->local().storage)->sin_port;
    }
    quic::TransportConfig t;
    t.idle_timeout_ns = 30 * quic::kSecond;
    auto c = quic::Connection::Connect(**tls, t, quic::Path{local, remote}, this, Now());
    if (!c.ok()) return Fail(std::string(c.status().message()));
    conn_ = c->get();
    std::vector<uint8_t> scratch(64 * 1500);
    const uint64_t start = Now();
    const uint64_t end = o_.seconds > 0 ? start + uint64_t(o_.seconds * 1e9) : UINT64_MAX;
    uint64_t next_report = start + quic::kSecond;
    next_send_ = start;
    // A publisher stops sending at the end, then waits (at most 10 s) for its acks.
    while (!g_stop && !failed_) {
      const uint64_t now = Now();
      if (now >= end && (o_.mode != "pub" || inflight_ == 0 || now >= end + 10 * quic::kSecond)) break;
      (*sock)->Receive([&](const quic::Path& p, std::span<const uint8_t> d) {
        if (!conn_->Read(p, d, now)) closed_ = true;
      });
      if (conn_->Expiry() <= now && !conn_->HandleExpiry(now)) closed_ = true;
      if (closed_) return Fail("the connection closed");
      if (connected_ && o_.mode == "pub" && now < end) Publish(now);
      // MQTT keepalive (30 s in CONNECT): a PINGREQ on the control stream every 10 s.
      if (connected_ && now >= next_ping_) {
        Send(0, mqtt::Pingreq{});
        next_ping_ = now + 10 * quic::kSecond;
      }
      conn_->Write(now, scratch, 64, [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
        (*sock)->Send(p, d, seg);
      });
      if (now >= next_report) {
        Report(now - start);
        next_report += quic::kSecond;
      }
      pollfd pfd{(*sock)->fd(), POLLIN, 0};
      const uint64_t wake = std::min({conn_->Expiry(), next_report, now < end ? end : now + quic::kMillisecond * 10,
                                      connected_ ? next_ping_ : UINT64_MAX,
                                      o_.mode == "pub" && connected_ && now < end ? next_send_ : UINT64_MAX});
      const uint64_t t = Now();
      const uint64_t wait = wake > t ? wake - t : 0;
      const timespec ts{time_t(wait / quic::kSecond), long(wait % quic::kSecond)};
      ::ppoll(&pfd, 1, &ts, nullptr);
    }
    Summary(std::min(Now(), end) - start);
    conn_->Close(0);
    conn_->Write(Now(), scratch, 1, [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
      (*sock)->Send(p, d, seg);
    });
    return failed_ ? 1 : 0;
  }

  // quic::ConnectionEvents
  void OnHandshakeConfirmed() override {
    auto ctrl = conn_->OpenStream();
    if (!ctrl.ok()) {
      failed_ = true;
      return;
    }
    SendConnect();
    for (int i = 0; i < o_.streams; ++i) {
      auto s = conn_->OpenStream();
      if (!s.ok()) break;
      data_.push_back(*s);
    }
    if (data_.empty()) data_.push_back(0);
  }
  void OnStreamData(int64_t sid, std::span<const uint8_t> data, bool) override {
    auto& f = framers_[sid];
    (void)f.Feed(data, [&](const mqtt::Frame& fr) {
      OnPacket(sid, fr);
      return true;
    });
  }

 private:
  void Send(int64_t sid, const mqtt::Packet& p) override {
    std::vector<uint8_t> buf;
    if (!mqtt::EncodeTo(p, mqtt::Version::k5, buf)) return;
    (void)conn_->Send(sid, quic::Buffer::Copy(buf));
  }
  uint64_t Buffered(int64_t sid) const override { return conn_->BufferedBytes(sid); }

  quic::Connection* conn_ = nullptr;
};

// MQTT over TCP, plain or TLS (quic::TlsStream, as the appliance's listener uses it): one
// connection, everything on its one byte stream (stream 0).
class TcpClient final : public Client {
 public:
  using Client::Client;
  ~TcpClient() override { CloseSocket(); }

  int Run() override {
    const quic::Address remote = ServerAddress(o_.server);
    if (remote.empty()) return 2;
    if (o_.transport == "tls") {
      quic::TlsConfig tc;
      tc.stream = true;
      tc.cacertfile = o_.ca;
      tc.server_name = o_.server_name;
      auto t = quic::TlsContext::Create(quic::TlsContext::Side::kClient, tc);
      if (!t.ok()) return Fail(std::string(t.status().message()));
      tls_ctx_ = std::move(*t);
    }
    if (o_.mode == "connect") return ConnectLoop(remote);
    if (!Open(remote)) return 1;
    data_.push_back(0);
    SendConnect();
    const uint64_t start = Now();
    const uint64_t end = o_.seconds > 0 ? start + uint64_t(o_.seconds * 1e9) : UINT64_MAX;
    uint64_t next_report = start + quic::kSecond;
    next_send_ = start;
    while (!g_stop && !failed_) {
      const uint64_t now = Now();
      if (now >= end && (o_.mode != "pub" || inflight_ == 0 || now >= end + 10 * quic::kSecond)) break;
      // A connection that ends still gets its summary (what arrived until then).
      if (!ReadSome()) {
        Fail("the connection closed");
        break;
      }
      if (connected_ && o_.mode == "pub" && now < end) Publish(now);
      if (connected_ && now >= next_ping_) {
        Send(0, mqtt::Pingreq{});
        next_ping_ = now + 10 * quic::kSecond;
      }
      if (!Flush()) {
        Fail("write failed");
        break;
      }
      if (now >= next_report) {
        Report(now - start);
        next_report += quic::kSecond;
      }
      pollfd pfd{fd_, short(POLLIN | (Buffered(0) > 0 ? POLLOUT : 0)), 0};
      const uint64_t wake = std::min({next_report, now < end ? end : now + quic::kMillisecond * 10,
                                      connected_ ? next_ping_ : UINT64_MAX,
                                      o_.mode == "pub" && connected_ && now < end ? next_send_ : UINT64_MAX});
      const uint64_t t = Now();
      const uint64_t wait = wake > t ? wake - t : 0;
      const timespec ts{time_t(wait / quic::kSecond), long(wait % quic::kSecond)};
      ::ppoll(&pfd, 1, &ts, nullptr);
    }
    Summary(std::min(Now(), end) - start);
    return failed_ ? 1 : 0;
  }

 private:
  void Send(int64_t, const mqtt::Packet& p) override {
    (void)mqtt::EncodeTo(p, mqtt::Version::k5, tx_);  // appends
  }
  uint64_t Buffered(int64_t) const override {
    return tx_.size() - tx_off_ + (tls_ ? tls_->pending_out() : 0);
  }

  // Connects (and handshakes) within 10 s; false with a message otherwise.
  bool Open(const quic::Address& remote) {
    CloseSocket();
    fd_ = ::socket(remote.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::connect(fd_, remote.sa(), remote.len) != 0) {
      Fail(std::string("connect: ") + std::strerror(errno));
      return false;
    }
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    framers_.erase(0);
    tx_.clear();
    tx_off_ = 0;
    if (!tls_ctx_) return true;
    auto t = quic::TlsStream::Create(*tls_ctx_, fd_);
    if (!t.ok()) {
      Fail(std::string(t.status().message()));
      return false;
    }
    tls_ = std::move(*t);
    const uint64_t deadline = Now() + 10 * quic::kSecond;
    for (;;) {
      const quic::TlsStream::Result r = tls_->Handshake();
      if (r == quic::TlsStream::Result::kOk) return true;
      if (r != quic::TlsStream::Result::kAgain || Now() > deadline) {
        Fail("TLS handshake: " + (tls_->error().empty() ? std::string("timed out") : tls_->error()));
        return false;
      }
      pollfd pfd{fd_, short(POLLIN | (tls_->wants_write() ? POLLOUT : 0)), 0};
      if (tls_->wants_write()) (void)tls_->Flush();
      ::poll(&pfd, 1, 100);
    }
  }
  void CloseSocket() {
    if (tls_) tls_->Bye();
    tls_.reset();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Everything readable now, through the framer to OnPacket; false once the peer is gone.
  bool ReadSome() {
    auto feed = [&](std::span<const uint8_t> d) {
      (void)framers_[0].Feed(d, [&](const mqtt::Frame& fr) {
        OnPacket(0, fr);
        return true;
      });
    };
    if (tls_) {
      quic::TlsStream::Result r;
      do {
        r = tls_->Read(scratch_, 1 << 20, feed);
      } while (r == quic::TlsStream::Result::kOk);
      return r == quic::TlsStream::Result::kAgain;
    }
    for (;;) {
      const ssize_t n = ::recv(fd_, scratch_.data(), scratch_.size(), MSG_DONTWAIT);
      if (n > 0) {
        feed(std::span<const uint8_t>(scratch_.data(), size_t(n)));
        continue;
      }
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    }
  }
  // Writes what the socket takes; false on a write error.
  bool Flush() {
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

  // `connect` mode: whole MQTT connections (TCP, TLS handshake, CONNECT/CONNACK, close) one
  // after the other until --seconds.
  int ConnectLoop(const quic::Address& remote) {
    const uint64_t start = Now();
    const uint64_t end = start + uint64_t(std::max(o_.seconds, 1.0) * 1e9);
    uint64_t next_report = start + quic::kSecond, done = 0, failures = 0, last = 0;
    std::vector<uint64_t> took;
    while (!g_stop && Now() < end) {
      const uint64_t t0 = Now();
      failed_ = false;
      connected_ = false;
      bool ok = Open(remote);
      if (ok) {
        SendConnect();
        ok = Flush();
        const uint64_t deadline = Now() + 5 * quic::kSecond;
        while (ok && !connected_ && !failed_ && Now() < deadline) {
          pollfd pfd{fd_, POLLIN, 0};
          ::poll(&pfd, 1, 100);
          ok = ReadSome() && Flush();
        }
        ok = ok && connected_;
      }
      CloseSocket();
      if (ok) {
        ++done;
        took.push_back(Now() - t0);
      } else {
        ++failures;
      }
      if (Now() >= next_report) {
        std::fprintf(stderr, "qbench connect %4.0fs: %8lu connections (%6lu/s), %lu failed\n",
                     double(Now() - start) / 1e9, done, done - last, failures);
        last = done;
        next_report += quic::kSecond;
      }
    }
    const double s = double(Now() - start) / 1e9;
    std::printf("{\"mode\":\"connect\",\"transport\":\"%s\",\"connections\":%lu,\"failed\":%lu,"
                "\"rate\":%.1f,\"connect_p50_ms\":%.3f,\"connect_p99_ms\":%.3f}\n",
                o_.transport.c_str(), done, failures, double(done) / s, Pct(took, 0.5), Pct(took, 0.99));
    std::fflush(stdout);
    return failures > 0 && done == 0 ? 1 : 0;
  }

  std::unique_ptr<quic::TlsContext> tls_ctx_;
  std::unique_ptr<quic::TlsStream> tls_;
  int fd_ = -1;
  std::vector<uint8_t> tx_;
  size_t tx_off_ = 0;
  std::vector<uint8_t> scratch_ = std::vector<uint8_t>(64 << 10);
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: qbench pub|sub --server IP:PORT [--transport quic|tcp|tls] [--ca FILE]\n"
                 "       [--server-name NAME] --topic T [--qos 0|1] [--rate N] [--size BYTES] [--streams N]\n"
                 "       [--seconds S] [--id ID]\n"
                 "       qbench connect --server IP:PORT --transport tcp|tls [--ca FILE] [--seconds S]\n");
    return 2;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::unique_ptr<Client> c;
  if (o.transport == "quic") {
    c = std::make_unique<QuicClient>(o);
  } else {
    c = std::make_unique<TcpClient>(o);
  }
  return c->Run();
}
