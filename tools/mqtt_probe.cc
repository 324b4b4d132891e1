// mqtt_probe: drives a broker with qbridge's own MQTT codec and prints live figures.
//
// A publisher keeps a window of QoS 1 PUBLISHes in flight (qbridge's OutboundQos), a
// subscriber receives them, checks every payload's sequence number and acknowledges
// (InboundQos). Once a second it prints messages/s acknowledged and received, the mean
// and max time from PUBLISH to PUBACK, and any loss or reordering.
//
//   mqtt_probe [--spawn-mosquitto | --port N] [--version 3.1|3.1.1|5] [--seconds N]
//              [--window N] [--payload BYTES]
//
// With --spawn-mosquitto it starts a private mosquitto on a loopback port and stops it
// on exit. It runs until --seconds have passed (0: until Ctrl-C).
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/time/clock.h"
#include "mqtt/codec.h"
#include "mqtt/qos.h"
#include "tests/support/mqtt_tcp_client.h"

namespace {

using namespace qbridge::mqtt;
using qbridge::testing::MosquittoBroker;
using qbridge::testing::MqttTcpClient;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct Options {
  bool spawn = false;
  int port = 1883;
  Version version = Version::k5;
  int seconds = 10;
  int window = 64;
  size_t payload = 64;
};

int Usage() {
  std::fprintf(stderr,
               "usage: mqtt_probe [--spawn-mosquitto | --port N] [--version 3.1|3.1.1|5]\n"
               "                  [--seconds N] [--window N] [--payload BYTES]\n");
  return 2;
}

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--spawn-mosquitto") {
      o->spawn = true;
    } else if (a == "--port") {
      const char* v = value();
      if (!v) return false;
      o->port = std::atoi(v);
    } else if (a == "--seconds") {
      const char* v = value();
      if (!v) return false;
      o->seconds = std::atoi(v);
    } else if (a == "--window") {
      const char* v = value();
      if (!v) return false;
      o->window = std::max(1, std::min(65535, std::atoi(v)));
    } else if (a == "--payload") {
      const char* v = value();
      if (!v) return false;
      o->payload = size_t(std::max(8, std::atoi(v)));
    } else if (a == "--version") {
      const char* v = value();
      if (!v) return false;
      const std::string s = v;
      if (s == "3.1") o->version = Version::k31;
      else if (s == "3.1.1") o->version = Version::k311;
      else if (s == "5") o->version = Version::k5;
      else return false;
    } else {
      return false;
    }
  }
  return o->port > 0 && o->port < 65536 && o->seconds >= 0;
}

std::unique_ptr<MqttTcpClient> Open(uint16_t port, Version v, const char* id) {
  auto c = MqttTcpClient::Dial("127.0.0.1", port, absl::Seconds(5));
  if (!c.ok()) {
    std::fprintf(stderr, "mqtt_probe: %s\n", c.status().ToString().c_str());
    return nullptr;
  }
  (*c)->set_version(v);
  Connect conn;
  conn.version = v;
  conn.client_id = id;
  conn.keep_alive = 60;
  if (!(*c)->Send(conn).ok()) return nullptr;
  auto ack = (*c)->Receive(absl::Seconds(5));
  const Connack* connack = ack.ok() ? std::get_if<Connack>(&ack->packet) : nullptr;
  if (!connack || connack->reason != ReasonCode::kSuccess) {
    std::fprintf(stderr, "mqtt_probe: CONNECT of %s refused\n", id);
    return nullptr;
  }
  return std::move(*c);
}

struct Sent {
  uint64_t seq;
  absl::Time at;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!Parse(argc, argv, &o)) return Usage();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  std::unique_ptr<MosquittoBroker> broker;
  uint16_t port = uint16_t(o.port);
  if (o.spawn) {
    auto b = MosquittoBroker::Start();
    if (!b.ok()) {
      std::fprintf(stderr, "mqtt_probe: %s\n", b.status().ToString().c_str());
      return 1;
    }
    broker = std::move(*b);
    port = broker->port();
    std::printf("mosquitto listening on 127.0.0.1:%u\n", port);
  }
  auto sub = Open(port, o.version, "qbridge-probe-sub");
  auto pub = Open(port, o.version, "qbridge-probe-pub");
  if (!sub || !pub) return 1;

  const std::string topic = "qbridge/probe";
  Subscribe s;
  s.packet_id = 1;
  s.subscriptions.push_back({topic, QoS::k1});
  if (!sub->Send(s).ok()) return 1;
  auto suback = sub->Receive(absl::Seconds(5));
  if (!suback.ok() || !std::holds_alternative<Suback>(suback->packet)) {
    std::fprintf(stderr, "mqtt_probe: no SUBACK\n");
    return 1;
  }

  OutboundQos<Sent> window(uint16_t(o.window));
  InboundQos inbound;
  std::vector<uint8_t> payload(o.payload, 0);
  uint64_t next_seq = 0, expect_seq = 0, acked = 0, received = 0, out_of_order = 0;
  uint64_t acked_total = 0, received_total = 0;
  absl::Duration lat_sum, lat_max;
  const absl::Time start = absl::Now();
  absl::Time next_report = start + absl::Seconds(1);
  std::printf("%8s %12s %12s %12s %12s %10s\n", "t(s)", "acked/s", "received/s", "ack mean",
              "ack max", "reordered");
  bool ok = true;
  while (!g_stop && ok) {
    const absl::Time now = absl::Now();
    if (o.seconds > 0 && now - start >= absl::Seconds(o.seconds)) break;
    // Keep the window full.
    while (window.CanSend()) {
      std::memcpy(payload.data(), &next_seq, sizeof(next_seq));
      const auto id = window.Start(QoS::k1, Sent{next_seq, absl::Now()});
      Publish p;
      p.qos = QoS::k1;
      p.packet_id = *id;
      p.topic = topic;
      p.payload = payload;
      if (!pub->Send(p).ok()) { ok = false; break; }
      ++next_seq;
    }
    // Drain acks, then messages, without blocking long on either.
    for (auto a = pub->Receive(absl::Milliseconds(1)); a.ok(); a = pub->Receive(absl::ZeroDuration())) {
      if (const auto* ack = std::get_if<PubAck>(&a->packet)) {
        Sent done;
        if (window.OnPuback(ack->packet_id, &done) == AckOutcome::kCompleted) {
          const absl::Duration lat = absl::Now() - done.at;
          lat_sum += lat;
          lat_max = std::max(lat_max, lat);
          ++acked;
        }
      }
    }
    for (auto m = sub->Receive(absl::Milliseconds(1)); m.ok(); m = sub->Receive(absl::ZeroDuration())) {
      const auto* got = std::get_if<Publish>(&m->packet);
      if (!got) continue;
      uint64_t seq = 0;
      if (got->payload.size() >= sizeof(seq)) std::memcpy(&seq, got->payload.data(), sizeof(seq));
      if (seq != expect_seq) ++out_of_order;
      expect_seq = seq + 1;
      ++received;
      if (inbound.OnPublish(0, got->qos, got->packet_id).kind == InboundDecision::kDeliver &&
          got->qos == QoS::k1) {
        PubAck ack;
        ack.packet_id = got->packet_id;
        if (!sub->Send(ack).ok()) { ok = false; break; }
        inbound.OnAckSent(0, got->packet_id);
      }
    }
    if (absl::Now() >= next_report) {
      const double mean_us = acked ? absl::ToDoubleMicroseconds(lat_sum) / double(acked) : 0;
      std::printf("%8.0f %12llu %12llu %10.0fus %10.0fus %10llu\n",
                  absl::ToDoubleSeconds(absl::Now() - start), (unsigned long long)acked,
                  (unsigned long long)received, mean_us, absl::ToDoubleMicroseconds(lat_max),
                  (unsigned long long)out_of_order);
      std::fflush(stdout);
      acked_total += acked;
      received_total += received;
      acked = received = 0;
      lat_sum = lat_max = absl::ZeroDuration();
      next_report += absl::Seconds(1);
    }
  }
  acked_total += acked;
  received_total += received;
  pub->Send(Disconnect{}).IgnoreError();
  sub->Send(Disconnect{}).IgnoreError();
  std::printf("total: %llu acknowledged, %llu received, %llu out of order\n",
              (unsigned long long)acked_total, (unsigned long long)received_total,
              (unsigned long long)out_of_order);
  return ok ? 0 : 1;
}
