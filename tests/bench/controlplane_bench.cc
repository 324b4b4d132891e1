// Controlplane benchmarks: the keepalive timer wheel with a million live timers, and the
// controlplane core's CPU share when it holds a million south sessions at keepalive 60 s.
//
//   build/release/tests/bench/controlplane_bench
//   build/release/tests/bench/controlplane_bench --benchmark_filter=Sessions --sessions=1000000
#include <benchmark/benchmark.h>

#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "controlplane/controlplane.h"
#include "controlplane/timer_wheel.h"
#include "mqtt/codec.h"

namespace qbridge::cp {
namespace {

constexpr uint64_t kS = dp::kSecNs;
size_t g_sessions = 1'000'000;

// 1M timers spread over 60-90 s, as keepalives of a million connections are.
void Fill(TimerWheel& w, std::mt19937_64& rng, size_t n, MonoNs now) {
  w.reserve(n + 1024);
  for (size_t i = 0; i < n; ++i) w.Schedule(now + 60 * kS + rng() % (30 * kS), i);
}

void BM_WheelScheduleCancel(benchmark::State& state) {
  TimerWheel w;
  std::mt19937_64 rng(1);
  Fill(w, rng, size_t(state.range(0)), 0);
  for (auto _ : state) {
    const TimerId id = w.Schedule(60 * kS + rng() % (30 * kS), 0);
    benchmark::DoNotOptimize(w.Cancel(id));
  }
  state.SetLabel("one schedule + one cancel per iteration");
}
BENCHMARK(BM_WheelScheduleCancel)->Arg(1'000'000);

void BM_WheelReschedule(benchmark::State& state) {
  TimerWheel w;
  std::mt19937_64 rng(2);
  std::vector<TimerId> ids;
  const size_t n = size_t(state.range(0));
  w.reserve(n);
  for (size_t i = 0; i < n; ++i) ids.push_back(w.Schedule(60 * kS + rng() % (30 * kS), i));
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(w.Reschedule(ids[i], 60 * kS + rng() % (30 * kS)));
    if (++i == n) i = 0;
  }
}
BENCHMARK(BM_WheelReschedule)->Arg(1'000'000);

// Steady state: every fired timer is re-armed a keepalive later; the clock advances in
// 1 ms steps, as the controlplane's loop does. Reported per fired timer.
void BM_WheelExpire(benchmark::State& state) {
  TimerWheel w;
  std::mt19937_64 rng(3);
  const size_t n = size_t(state.range(0));
  Fill(w, rng, n, 0);
  MonoNs now = 0;
  uint64_t fired = 0;
  for (auto _ : state) {
    now += dp::kMsNs;
    fired += w.Advance(now, [&](TimerId, uint64_t c) { w.Schedule(now + 90 * kS, c); });
  }
  state.counters["fired"] = double(fired);
  state.counters["ns_per_expiry"] = benchmark::Counter(
      double(fired), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.SetLabel("iteration = 1 ms of clock");
}
BENCHMARK(BM_WheelExpire)->Arg(1'000'000)->Iterations(120'000);

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// The real Controlplane with a million south sessions (CONNECT through the ring, keepalive
// 60 s, deadline 90 s). Activity: every connection sends something every 30 s (the stamp
// moves, as a worker's would), so every deadline fires once per 90 s and re-arms lazily.
// Reported: controlplane CPU seconds per second of clock = its share of one core.
void BM_SessionsKeepaliveCpuShare(benchmark::State& state) {
  const size_t n = g_sessions;
  dp::RingMesh rings(1, 4096);
  dp::ActivityTable activity(n);
  ControlplaneConfig cfg;
  cfg.seed = 1;
  Controlplane cp(cfg, &rings, {&activity});
  MonoNs now = kS;
  cp.Start(now);
  // Connect everyone.
  std::vector<uint8_t> connect;
  dp::Msg drain[256];
  for (size_t i = 0; i < n; ++i) {
    mqtt::Connect c;
    c.version = mqtt::Version::k311;
    const std::string id = "dev-" + std::to_string(i);
    c.client_id = id;
    c.keep_alive = 60;
    connect.clear();
    mqtt::EncodeTo(c, c.version, connect);
    while (!rings.ring(0, rings.cp()).Enqueue(
        dp::MakeMsg(dp::MsgType::kControlPacket, dp::ConnRef{0, 1, uint32_t(i)}, 0, connect))) {
      cp.PollOnce(now);
      for (size_t k; (k = rings.ring(rings.cp(), 0).DequeueBurst(drain)) > 0;)
        for (size_t j = 0; j < k; ++j) dp::ReleaseMsg(drain[j]);
    }
    activity.at(uint32_t(i)).Reset(now);
  }
  while (rings.ring(0, rings.cp()).ApproxSize() > 0 || cp.sessions() < n) {
    if (!cp.PollOnce(now)) break;
    for (size_t k; (k = rings.ring(rings.cp(), 0).DequeueBurst(drain)) > 0;)
      for (size_t j = 0; j < k; ++j) dp::ReleaseMsg(drain[j]);
  }
  if (cp.sessions() != n) state.SkipWithError("sessions missing");

  const uint64_t simulated = 180 * kS;
  for (auto _ : state) {
    const double cpu0 = ThreadCpuSeconds();
    double activity_cpu = 0;
    size_t next_touch = 0;
    const size_t per_ms = n / 30'000 + 1;  // everyone touched once per 30 s
    for (uint64_t t = 0; t < simulated; t += dp::kMsNs) {
      now += dp::kMsNs;
      // The workers' side of the simulation (stamping), kept out of the share.
      const double a0 = ThreadCpuSeconds();
      for (size_t k = 0; k < per_ms; ++k) {
        dp::ConnActivity::Stamp(activity.at(uint32_t(next_touch)).last_rx, now);
        if (++next_touch == n) next_touch = 0;
      }
      activity_cpu += ThreadCpuSeconds() - a0;
      cp.PollOnce(now);
    }
    const double cp_cpu = ThreadCpuSeconds() - cpu0 - activity_cpu;
    state.counters["cpu_share"] = cp_cpu / (double(simulated) / 1e9);
    state.counters["sessions"] = double(cp.sessions());
    state.counters["keepalive_timeouts"] = double(cp.south().keepalive_timeouts);
  }
  state.SetLabel("controlplane CPU s per s of clock, 180 s simulated");
}
BENCHMARK(BM_SessionsKeepaliveCpuShare)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace qbridge::cp

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--sessions=", 11) == 0) {
      qbridge::cp::g_sessions = std::stoul(argv[i] + 11);
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      --i;
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
