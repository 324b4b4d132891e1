// Allocations per MQTT message on the appliance's data path: a device publishes to the
// edge, the edge's bridge forwards to the cloud, the cloud delivers to a subscriber. Only
// the worker cores' loop iterations are counted (the simulated links' own allocations are
// left out), once connections, streams and queues are warm.
#include <gtest/gtest.h>

#include "tests/support/alloc_count.h"
#include "tests/support/sim_edge_cloud.h"

namespace qbridge::testing {
namespace {

struct PerMessage {
  double edge, cloud;
};

// Sends `n` PUBLISHes of `qos` from the device in bursts of 50 and waits for the last
// delivery (and, for QoS 1, the last PUBACK); returns allocations per message per appliance.
PerMessage Measure(EdgeAndCloud& t, mqtt::QoS qos, int n, uint16_t* next_id) {
  const size_t delivered = t.app->Publishes(t.a4).size();
  const size_t acked = t.dev->CountType(t.d4, PacketType::kPuback);
  const uint64_t edge0 = t.edge->worker_metered, cloud0 = t.cloud->worker_metered;
  const std::string payload(200, 'p');
  for (int i = 0; i < n; i += 50) {
    for (int j = i; j < i + 50 && j < n; ++j) {
      const uint16_t id = qos == mqtt::QoS::k0 ? 0 : (*next_id)++;
      t.dev->Send(t.d4, Pub("t/sensor/42", payload.c_str(), qos, id));
    }
    const size_t want = delivered + std::min(i + 50, n);
    EXPECT_TRUE(t.net.RunUntil([&] { return t.app->Publishes(t.a4).size() >= want; }, 5 * kSecond));
  }
  if (qos != mqtt::QoS::k0) {
    EXPECT_TRUE(t.net.RunUntil(
        [&] { return t.dev->CountType(t.d4, PacketType::kPuback) == acked + size_t(n); }, 5 * kSecond));
  }
  return {double(t.edge->worker_metered - edge0) / n, double(t.cloud->worker_metered - cloud0) / n};
}

class WorkerAllocTest : public ::testing::TestWithParam<mqtt::QoS> {};

TEST_P(WorkerAllocTest, ForwardAndDeliverWithoutAllocatingPerMessage) {
  if (!AllocCounting()) GTEST_SKIP() << "allocations are not counted here";
  const mqtt::QoS qos = GetParam();
  EdgeAndCloud t;
  t.net.meter = &ThreadAllocations;
  ASSERT_TRUE(t.Start({EdgeAndCloud::Bridge("cloud", {cp::BridgeForward{"t/#", "", qos, false, "", "", 0}})},
                      "t/#", qos));
  uint16_t id = 1;
  Measure(t, qos, 500, &id);  // warm: queues, windows and id tables reach their size
  const PerMessage m = Measure(t, qos, 2000, &id);
  RecordProperty("edge_allocs_per_message", std::to_string(m.edge));
  RecordProperty("cloud_allocs_per_message", std::to_string(m.cloud));
  printf("edge %.3f cloud %.3f allocations per message\n", m.edge, m.cloud);
  EXPECT_LE(m.edge, 0.05);
  EXPECT_LE(m.cloud, 0.05);
}

// Two worker cores on the edge: the device on core 1, the bridge and a subscriber on core 0.
// Every message crosses the ring to core 0 twice (for the bridge and for the subscriber),
// and its end-to-end ack comes back: the ring's blocks are recycled too.
TEST(WorkerAllocTest, CrossCoreForwardAllocatesNothingPerMessage) {
  if (!AllocCounting()) GTEST_SKIP() << "allocations are not counted here";
  TwoCoreEdge t;
  ASSERT_TRUE(t.Start(cp::BridgeForward{"t/#", "", mqtt::QoS::k1, false, "", "", 0}, "t/#", "t/#"));
  t.net.meter = &ThreadAllocations;
  SimNet& net = t.net;
  SimMqttClient& dev = *t.dev;
  SimAppliance& edge = *t.edge;
  const int64_t d4 = t.d4;
  const std::string payload(200, 'p');
  uint16_t id = 1;
  auto burst = [&](int n) {
    const size_t acked = dev.CountType(d4, PacketType::kPuback);
    for (int i = 0; i < n; i += 50) {
      for (int j = 0; j < 50; ++j) dev.Send(d4, Pub("t/x", payload.c_str(), mqtt::QoS::k1, id++));
      const size_t want = acked + size_t(i + 50);
      EXPECT_TRUE(net.RunUntil([&] { return dev.CountType(d4, PacketType::kPuback) == want; }, 5 * kSecond));
    }
  };
  burst(500);
  const uint64_t before = edge.worker_metered;
  burst(2000);
  const double per = double(edge.worker_metered - before) / 2000;
  RecordProperty("edge_allocs_per_message", std::to_string(per));
  printf("two cores: edge %.3f allocations per message\n", per);
  EXPECT_EQ(edge.workers[1]->stats().routed_cross_core.Get(), 2u * 2500);
  EXPECT_EQ(edge.workers[1]->stats().drop_route_failed.Get(), 0u);
  EXPECT_LE(per, 0.05);
  // Every ring block went back to its core; none came from the heap.
  net.RunUntil([] { return false; }, 50 * quic::kMillisecond);
  for (const auto& w : edge.workers) {
    EXPECT_EQ(w->stats().ring_heap_blocks.Get(), 0u) << "core " << w->core();
    EXPECT_EQ(w->ring_blocks_free(), 512u) << "core " << w->core();
  }
}

INSTANTIATE_TEST_SUITE_P(QoS, WorkerAllocTest, ::testing::Values(mqtt::QoS::k0, mqtt::QoS::k1),
                         [](const auto& info) { return info.param == mqtt::QoS::k0 ? "QoS0" : "QoS1"; });

}  // namespace
}  // namespace qbridge::testing
