// Whole appliances in the simulated network, ready to route: helpers for addresses,
// listeners and packets, and an edge bridged to a cloud with a device and an application
// connected (the bridge tests' set-up, shared by the routing and hot-path tests).
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/quic_test_util.h"
#include "tests/support/sim_mqtt_client.h"
#include "tests/support/sim_net.h"

namespace qbridge::testing {

using quic::kSecond;
using mqtt::PacketType;

inline quic::Address Addr(const char* ip, uint16_t port) { return quic::Address::FromIpPort(ip, port); }

inline dp::WorkerConfig Listener(const quic::TlsContext* tls) {
  dp::WorkerConfig w;
  w.server_tls = tls;
  w.endpoint.retry = quic::RetryMode::kOff;
  return w;
}

inline mqtt::Subscribe Sub(uint16_t id, const char* filter, mqtt::QoS qos = mqtt::QoS::k1) {
  mqtt::Subscribe s;
  s.packet_id = id;
  s.subscriptions.push_back(mqtt::Subscription{filter, qos});
  return s;
}

inline mqtt::Publish Pub(const char* topic, const char* payload, mqtt::QoS qos, uint16_t id = 0) {
  mqtt::Publish p;
  p.topic = topic;
  p.payload = mqtt::Bytes(reinterpret_cast<const uint8_t*>(payload), std::strlen(payload));
  p.qos = qos;
  p.packet_id = id;
  return p;
}

// A cloud appliance and an edge whose bridges all dial it from the edge's address, an
// application subscribed on the cloud and a device on the edge, everyone connected: what
// the bridge tests share.
struct EdgeAndCloud {
  TestTls tls;
  SimNet net;
  const quic::Address cloud_addr = Addr("198.18.2.1", 14567);
  const quic::Address edge_addr = Addr("198.18.1.1", 14567);
  std::unique_ptr<SimAppliance> cloud, edge;
  std::unique_ptr<SimMqttClient> app, dev;
  int64_t a4 = 0, d4 = 0;  // their first data streams
  uint16_t client_keepalive = 60;  // the app's and the device's (0: none, for long runs)
  bool qos0_backpressure = true;   // the edge's bridges'

  static cp::BridgeConfig Bridge(const std::string& name, std::vector<cp::BridgeForward> forwards) {
    cp::BridgeConfig b;
    b.name = name;
    b.client_id = "edge-" + name;
    b.version = mqtt::Version::k5;
    b.keepalive_s = 4;
    b.forwards = std::move(forwards);
    return b;
  }

  ::testing::AssertionResult Start(std::vector<cp::BridgeConfig> bridges, const char* app_filter,
                                   mqtt::QoS app_qos = mqtt::QoS::k1, cp::ControlplaneConfig cloud_config = {},
                                   uint64_t handshake_timeout_ns = 0) {
    cloud = std::make_unique<SimAppliance>(net, cloud_addr, Listener(tls.server.get()), std::move(cloud_config));
    dp::WorkerConfig ew = Listener(tls.server.get());
    dp::BridgeDial d;
    d.local = edge_addr;
    d.remote = cloud_addr;
    d.tls = tls.client.get();
    if (handshake_timeout_ns) d.transport.handshake_timeout_ns = handshake_timeout_ns;
    d.qos0_backpressure = qos0_backpressure;
    ew.bridges.assign(bridges.size(), d);
    cp::ControlplaneConfig ec;
    ec.bridges = std::move(bridges);
    edge = std::make_unique<SimAppliance>(net, edge_addr, ew, ec);
    edge->cp->Start(net.now());
    app = std::make_unique<SimMqttClient>(net, *tls.client, Addr("198.18.3.1", 50000), cloud_addr);
    dev = std::make_unique<SimMqttClient>(net, *tls.client, Addr("198.18.4.1", 50000), edge_addr);
    auto bridges_up = [&] {
      for (size_t i = 0; i < edge->cp->bridge_count(); ++i)
        if (edge->cp->bridge(i).state != cp::BridgeState::kUp) return false;
      return true;
    };
    if (!net.RunUntil([&] { return app->confirmed() && dev->confirmed() && bridges_up(); }, 5 * kSecond))
      return ::testing::AssertionFailure() << "bridges or clients did not come up";
    app->Connect("app", client_keepalive);
    dev->Connect("dev", client_keepalive);
    a4 = app->Open();
    d4 = dev->Open();
    app->Send(a4, Sub(1, app_filter, app_qos));
    if (!net.RunUntil([&] { return app->CountType(a4, PacketType::kSuback) == 1; }, 2 * kSecond))
      return ::testing::AssertionFailure() << "no SUBACK";
    return ::testing::AssertionSuccess();
  }
};

// A cloud and an edge with two worker cores whose bridge runs on core 0, an application on
// the cloud, a device on core 1 and a monitor on core 0, connected and subscribed: the
// cross-core tests' set-up.
struct TwoCoreEdge {
  TestTls tls;
  SimNet net;
  const quic::Address cloud_addr = Addr("198.18.2.1", 14567);
  const quic::Address edge0 = Addr("198.18.1.1", 14567), edge1 = Addr("198.18.1.2", 14567);
  std::unique_ptr<SimAppliance> cloud, edge;
  std::unique_ptr<SimMqttClient> app, dev, mon;
  int64_t a4 = 0, d4 = 0, m4 = 0;  // their first data streams

  ::testing::AssertionResult Start(const cp::BridgeForward& forward, const char* app_filter,
                                   const char* mon_filter) {
    cloud = std::make_unique<SimAppliance>(net, cloud_addr, Listener(tls.server.get()), cp::ControlplaneConfig{});
    dp::BridgeDial d;
    d.local = edge0;
    d.remote = cloud_addr;
    d.tls = tls.client.get();
    std::vector<dp::WorkerConfig> wcs = {Listener(tls.server.get()), Listener(tls.server.get())};
    for (auto& w : wcs) w.bridges.push_back(d);  // every worker knows every bridge
    cp::ControlplaneConfig ec;
    ec.bridges.push_back(EdgeAndCloud::Bridge("cloud", {forward}));
    edge = std::make_unique<SimAppliance>(net, std::vector<quic::Address>{edge0, edge1}, wcs, ec);
    edge->cp->Start(net.now());
    app = std::make_unique<SimMqttClient>(net, *tls.client, Addr("198.18.3.1", 50000), cloud_addr);
    dev = std::make_unique<SimMqttClient>(net, *tls.client, Addr("198.18.4.1", 50000), edge1);  // core 1
    mon = std::make_unique<SimMqttClient>(net, *tls.client, Addr("198.18.4.2", 50000), edge0);  // core 0
    if (!net.RunUntil([&] {
          return app->confirmed() && dev->confirmed() && mon->confirmed() &&
                 edge->cp->bridge(0).state == cp::BridgeState::kUp;
        }, 3 * kSecond)) {
      return ::testing::AssertionFailure() << "bridge or clients did not come up";
    }
    app->Connect("app");
    dev->Connect("dev");
    mon->Connect("mon");
    a4 = app->Open();
    d4 = dev->Open();
    m4 = mon->Open();
    app->Send(a4, Sub(1, app_filter));
    mon->Send(m4, Sub(1, mon_filter));
    if (!net.RunUntil([&] {
          return app->CountType(a4, PacketType::kSuback) == 1 && mon->CountType(m4, PacketType::kSuback) == 1;
        }, 2 * kSecond)) {
      return ::testing::AssertionFailure() << "no SUBACK";
    }
    return ::testing::AssertionSuccess();
  }
};

}  // namespace qbridge::testing
