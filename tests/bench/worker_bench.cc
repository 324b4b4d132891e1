// A worker core's cost per MQTT message on the appliance's data path, measured inside
// whole appliances over the simulated network (tests/support/sim_edge_cloud.h): a device
// publishes to the edge (QoS 0 or 1), the edge's bridge forwards to the cloud over QUIC at
// that QoS (QoS 1: the device's PUBACK waits for the cloud's), the cloud delivers to a QoS 0
// subscriber. The timed figure is the time spent inside the edge worker's
// loop iterations alone (the links' copies, the clients and the cloud left out; everything
// runs on this thread), so messages/s per edge core = 1 / that time. The cloud worker's
// share is reported beside it. Idle iterations between bursts count too, as they would on
// a polling core.
#include <benchmark/benchmark.h>

#include <chrono>

#include "tests/support/sim_edge_cloud.h"

namespace qbridge::testing {
namespace {

uint64_t NowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

// range(0): QoS (0 or 1); range(1): payload bytes. Each iteration is a burst of 100
// PUBLISHes, run until all are delivered (and, for QoS 1, acknowledged end to end).
void BM_WorkerForward(benchmark::State& state) {
  const auto qos = mqtt::QoS(state.range(0));
  const std::string payload(size_t(state.range(1)), 'p');
  EdgeAndCloud t;
  t.client_keepalive = 0;  // the run outlasts any keepalive, and the clients send no PINGREQ
  // The application subscribes at QoS 0: it acknowledges nothing, so QoS 1 deliveries to
  // it would use up the cloud's packet ids. The device -> edge -> cloud path keeps `qos`.
  if (!t.Start({EdgeAndCloud::Bridge("cloud", {cp::BridgeForward{"t/#", "", qos, false, "", "", 0}})}, "t/#",
               mqtt::QoS::k0)) {
    state.SkipWithError("set-up failed");
    return;
  }
  t.net.meter = &NowNs;
  constexpr int kBurst = 100;
  uint16_t id = 1;
  size_t delivered = 0, acked = 0;
  auto burst = [&] {
    for (int i = 0; i < kBurst; ++i) {
      t.dev->Send(t.d4, Pub("t/sensor/42", payload.c_str(), qos, qos == mqtt::QoS::k0 ? 0 : id++));
      if (id == 0) id = 1;
    }
    delivered += kBurst;
    if (qos != mqtt::QoS::k0) acked += kBurst;
    return t.net.RunUntil([&] {
      return t.app->CountType(t.a4, PacketType::kPublish) >= delivered &&
             (qos == mqtt::QoS::k0 || t.dev->CountType(t.d4, PacketType::kPuback) >= acked);
    }, 5 * kSecond);
  };
  for (int i = 0; i < 5; ++i) burst();  // warm: windows, pools, queues
  uint64_t cloud_ns = 0;
  for (auto _ : state) {
    const uint64_t edge0 = t.edge->worker_metered, cloud0 = t.cloud->worker_metered;
    if (!burst()) {
      fprintf(stderr, "delivered %zu of %zu, acked %zu of %zu, edge pending %zu\n",
              t.app->CountType(t.a4, PacketType::kPublish), delivered,
              t.dev->CountType(t.d4, PacketType::kPuback), acked, t.edge->worker->NorthPending(0));
      state.SkipWithError("a burst was not delivered in time");
      return;
    }
    state.SetIterationTime(double(t.edge->worker_metered - edge0) * 1e-9);
    cloud_ns += t.cloud->worker_metered - cloud0;
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
  state.counters["cloud_ns_per_msg"] = double(cloud_ns) / double(state.iterations() * kBurst);
}
BENCHMARK(BM_WorkerForward)
    ->ArgsProduct({{0, 1}, {64, 1024}})
    ->ArgNames({"qos", "bytes"})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace qbridge::testing

BENCHMARK_MAIN();
