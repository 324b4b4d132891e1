// An MQTT-over-QUIC client for simulations, written against the wire model only (our
// codec and QUIC connection, none of the appliance's code): opens streams, sends packets,
// keeps what arrives per stream.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "mqtt/codec.h"
#include "mqtt/framer.h"
#include "tests/support/quic_test_util.h"
#include "tests/support/sim_net.h"

namespace qbridge::testing {

class SimMqttClient {
 public:
  SimMqttClient(SimNet& net, const quic::TlsContext& tls, const quic::Address& self,
                const quic::Address& server, mqtt::Version v = mqtt::Version::k5)
      : port_(&net.AddPort(self)), version_(v) {
    quic::TransportConfig tc;
    tc.idle_timeout_ns = 30 * quic::kSecond;
    auto c = quic::Connection::Connect(tls, tc, quic::Path{self, server}, &ev_, net.now());
    EXPECT_TRUE(c.ok());
    conn_ = std::move(*c);
    ev_.conn = conn_.get();
    net.AddNode({[this](uint64_t now) { return Poll(now); },
                 [this] { return closed_ ? quic::kNever : conn_->Expiry(); }});
  }

  bool confirmed() const { return ev_.confirmed; }
  const RecordingEvents& events() const { return ev_; }
  bool closed() const { return closed_; }
  quic::Connection& conn() { return *conn_; }

  int64_t Open() {
    auto s = conn_->OpenStream();
    EXPECT_TRUE(s.ok());
    return s.ok() ? *s : -1;
  }
  void Send(int64_t stream, const mqtt::Packet& p) {
    std::vector<uint8_t> out;
    ASSERT_TRUE(mqtt::EncodeTo(p, version_, out));
    ASSERT_TRUE(conn_->Send(stream, quic::Buffer::Copy(out)).ok());
  }
  void Connect(const std::string& id, uint16_t keepalive = 60) {
    mqtt::Connect c;
    c.version = version_;
    c.client_id = id;
    c.keep_alive = keepalive;
    EXPECT_EQ(Open(), 0);
    Send(0, c);
  }

  // Whole packets received on `stream`, in order (raw bytes; decode with Decoded()).
  std::vector<std::vector<uint8_t>> Received(int64_t stream) {
    std::vector<std::vector<uint8_t>> out;
    mqtt::Framer f;
    (void)f.Feed(ev_.data[stream], [&](const mqtt::Frame& fr) {
      out.emplace_back(fr.whole.begin(), fr.whole.end());
      return true;
    });
    return out;
  }
  // Received PUBLISH topics and payloads on `stream`.
  std::vector<std::pair<std::string, std::string>> Publishes(int64_t stream) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& raw : Received(stream)) {
      mqtt::Framer f;
      (void)f.Feed(raw, [&](const mqtt::Frame& fr) {
        mqtt::Publish p;
        if (fr.type() == mqtt::PacketType::kPublish &&
            mqtt::DecodePublish(fr.header, fr.body, version_, &p).ok()) {
          out.emplace_back(std::string(p.topic), std::string(p.payload.begin(), p.payload.end()));
        }
        return true;
      });
    }
    return out;
  }
  // Packets of type `t` received on `stream` so far. Frames only what arrived since the
  // last call (stream bytes only ever append), so checking it in a loop stays cheap.
  size_t CountType(int64_t stream, mqtt::PacketType t) {
    Tally& tally = tallies_[stream];
    const std::vector<uint8_t>& d = ev_.data[stream];
    (void)tally.framer.Feed(std::span<const uint8_t>(d).subspan(tally.offset), [&](const mqtt::Frame& fr) {
      ++tally.by_type[fr.header >> 4];
      return true;
    });
    tally.offset = d.size();
    return tally.by_type[uint8_t(t)];
  }

 private:
  bool Poll(uint64_t now) {
    if (closed_) return false;
    const size_t n = port_->Receive(now, [&](const quic::Path& p, std::span<const uint8_t> d) {
      if (!conn_->Read(p, d, now)) closed_ = true;
    });
    if (conn_->Expiry() <= now && !conn_->HandleExpiry(now)) closed_ = true;
    conn_->Write(now, scratch_, 64, [&](const quic::Path& p, std::span<const uint8_t> d, size_t seg) {
      port_->Send(p, d, seg);
    });
    return n > 0;
  }

  struct Tally {
    mqtt::Framer framer;
    size_t offset = 0;
    std::array<size_t, 16> by_type{};
  };
  std::map<int64_t, Tally> tallies_;
  RecordingEvents ev_;
  std::unique_ptr<quic::Connection> conn_;
  SimNet::Port* port_;
  mqtt::Version version_;
  std::vector<uint8_t> scratch_ = std::vector<uint8_t>(64 * 1500);
  bool closed_ = false;
};

}  // namespace qbridge::testing
