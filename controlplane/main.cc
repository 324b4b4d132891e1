// qbridge: the appliance.
//
//   qbridge --config FILE          run
//   qbridge --check-config FILE    validate FILE, explain every problem by key path
//   qbridge --hash-password        read a password on stdin, print a user-file secret
//
// SIGTERM/SIGINT drain (bridges and clients are sent DISCONNECT and closed, within a bound)
// and exit 0; SIGHUP reloads the bridges (added, removed, replaced, or their rules and
// `enable` flags applied in place) without touching any connection that does not need it.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "controlplane/config.h"
#include "controlplane/controlplane.h"
#include "controlplane/rest.h"
#include "controlplane/password.h"
#include "dataplane/api/runtime.h"
#include "dataplane/api/time.h"

namespace {

using namespace qbridge;

std::atomic<int> g_stop{0};
std::atomic<int> g_reload{0};

void OnSignal(int sig) {
  if (sig == SIGHUP) {
    g_reload = 1;
  } else {
    g_stop = sig;
  }
}

template <typename... Args>
void Log(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  std::fprintf(stderr, "qbridge: %s\n", absl::StrFormat(fmt, args...).c_str());
}

int Usage() {
  std::fprintf(stderr,
               "usage: qbridge --config FILE | --check-config FILE | --hash-password\n");
  return 2;
}

// The activity table size per worker: connections it may hold.
constexpr size_t kConnsPerWorker = 65'536;
// How long a drain may take before the process exits anyway.
constexpr uint64_t kDrainNs = 3 * dp::kSecNs;
// How often REST's view is refreshed.
constexpr uint64_t kReportEveryNs = 200 * dp::kMsNs;

// SIGHUP with a config that loaded: bridges gone from the file are removed, new ones added
// (each worker learns it, then it dials), changed ones (server, credentials, timers) are
// replaced by a new connection once the new one could be prepared, and the rest get their
// forwards, subscriptions and enable flags without reconnecting. Listeners and the
// dataplane need a restart, and say so. Returns the configuration now in effect: a bridge
// that could not start is left out, a change that could not be applied keeps the old entry.
cp::AppConfig Reload(const cp::AppConfig& old, const cp::AppConfig& next, cp::Controlplane& cplane,
                     dp::Runtime& runtime, dp::MonoNs now) {
  auto find = [](const cp::AppConfig& c, const std::string& name) -> int {
    for (size_t i = 0; i < c.control.bridges.size(); ++i)
      if (c.control.bridges[i].name == name) return int(i);
    return -1;
  };
  cp::AppConfig effective = next;
  effective.control.bridges.clear();
  effective.runtime.bridges.clear();
  auto keep = [&](const cp::AppConfig& from, size_t k) {
    effective.control.bridges.push_back(from.control.bridges[k]);
    effective.runtime.bridges.push_back(from.runtime.bridges[k]);
  };
  size_t kept = 0, added = 0, removed = 0, replaced = 0, failed = 0;
  for (const auto& b : old.control.bridges) {
    if (find(next, b.name) < 0 && cplane.RemoveBridge(b.name, now)) {
      Log("reload: bridge %s removed", b.name);
      ++removed;
    }
  }
  for (size_t j = 0; j < next.control.bridges.size(); ++j) {
    const cp::BridgeConfig& b = next.control.bridges[j];
    const int i = find(old, b.name);
    const bool running = i >= 0 && cplane.HasBridge(b.name);
    if (running) {
      // The same bridge unless something beyond its rules and enable flag changed.
      cp::BridgeConfig a = old.control.bridges[size_t(i)];
      a.forwards = b.forwards, a.subscriptions = b.subscriptions, a.enabled = b.enabled;
      if (a == b && old.runtime.bridges[size_t(i)] == next.runtime.bridges[j]) {
        cplane.UpdateBridgeRules(b.name, b.forwards, b.subscriptions, now);
        cplane.SetBridgeEnabled(b.name, b.enabled, now);
        keep(next, j);
        ++kept;
        continue;
      }
    }
    // New, changed, or not running: the new connection is prepared before the old one goes.
    absl::StatusOr<std::vector<uint64_t>> dials =
        b.worker < runtime.workers()
            ? runtime.PrepareBridge(next.runtime.bridges[j])
            : absl::FailedPreconditionError(absl::StrCat("worker ", b.worker, " is not running (restart)"));
    if (!dials.ok()) {
      Log("reload: bridge %s %s: %s", b.name, running ? "not changed" : "not started",
          std::string(dials.status().message()));
      if (running) keep(old, size_t(i));
      ++failed;
      continue;
    }
    if (running) cplane.RemoveBridge(b.name, now);
    cplane.AddBridge(b, *dials, now);
    keep(next, j);
    const auto& d = next.runtime.bridges[j];
    Log("reload: bridge %s %s -> %s://%s", b.name, running ? "replaced" : "added",
        cp::UpstreamScheme(d), cp::HostPort(d.ip, d.port));
    ++(running ? replaced : added);
  }
  if (!(old.runtime.listener == next.runtime.listener) || old.runtime.tcp_listener != next.runtime.tcp_listener ||
      old.runtime.tls_listener != next.runtime.tls_listener || old.runtime.workers != next.runtime.workers ||
      old.runtime.backend != next.runtime.backend || !(old.http == next.http) ||
      !(old.runtime.store == next.runtime.store)) {
    Log("reload: listener, dataplane, http_server and store changes need a restart");
  }
  Log("reloaded: %zu bridge%s kept, %zu added, %zu replaced, %zu removed, %zu failed", kept,
      kept == 1 ? "" : "s", added, replaced, removed, failed);
  return effective;
}

int Run(const std::string& path) {
  auto loaded = cp::LoadConfig(path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  const cp::AppConfig cfg = std::move(*loaded);
  for (const std::string& n : cfg.notes) Log("config note: %s", n);
  cp::ControlplaneConfig control = cfg.control;
  if (!cfg.users_file.empty()) {
    auto users = cp::UserTable::Load(cfg.users_file);
    if (!users.ok()) {
      std::fprintf(stderr, "%s\n", std::string(users.status().message()).c_str());
      return 1;
    }
    control.south.users = *users;
  }

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  // A file size limit (ulimit -f) must fail a custody log's write with EFBIG, handled as a
  // full disk is, not kill the appliance.
  ::signal(SIGXFSZ, SIG_IGN);

  dp::RingMesh rings(size_t(cfg.runtime.workers));
  std::vector<std::unique_ptr<dp::ActivityTable>> tables;
  std::vector<dp::ActivityTable*> activity;
  for (int i = 0; i < cfg.runtime.workers; ++i) {
    tables.push_back(std::make_unique<dp::ActivityTable>(kConnsPerWorker));
    activity.push_back(tables.back().get());
  }
  auto runtime = dp::Runtime::Start(cfg.runtime, &rings, activity);
  if (!runtime.ok()) {
    Log("cannot start the dataplane: %s", std::string(runtime.status().message()));
    return 1;
  }
  dp::SystemClock clock;
  const dp::MonoNs started = clock.Now();
  cp::Controlplane cplane(control, &rings, activity);
  cplane.Start(started);

  std::unique_ptr<cp::RestServer> rest;
  if (cfg.http) {
    auto r = cp::RestServer::Start(*cfg.http, &cfg);
    if (!r.ok()) {
      Log("%s", std::string(r.status().message()));
      (*runtime)->Stop();
      return 1;
    }
    rest = std::move(*r);
  }
  if (cfg.runtime.listener) {
    Log("MQTT over QUIC on %s (udp, %s backend, %d worker%s)",
        cp::HostPort(cfg.runtime.listener->ip, (*runtime)->quic_port()), cfg.runtime.backend, cfg.runtime.workers,
        cfg.runtime.workers == 1 ? "" : "s");
  }
  if (cfg.runtime.tcp_listener) {
    Log("MQTT over TCP on %s", cp::HostPort(cfg.runtime.tcp_listener->ip, (*runtime)->tcp_port()));
  }
  if (cfg.runtime.tls_listener) {
    const auto& l = *cfg.runtime.tls_listener;
    Log("MQTT over TLS on %s (client certificates: %s)", cp::HostPort(l.ip, (*runtime)->tls_port()),
        !l.tls.verify_peer ? "not asked for" : l.fail_if_no_peer_cert ? "required" : "verified when sent");
  }
  for (size_t i = 0; i < cfg.control.bridges.size(); ++i) {
    const auto& d = cfg.runtime.bridges[i];
    Log("bridge %s -> %s://%s (keepalive %ds)%s", cfg.control.bridges[i].name,
        cp::UpstreamScheme(d), cp::HostPort(d.ip, d.port),
        cfg.control.bridges[i].keepalive_s, cfg.control.bridges[i].enabled ? "" : ", disabled");
  }
  if (rest) Log("REST on http://%s", cp::HostPort(cfg.http->ip, rest->port()));
  std::fflush(stderr);
  // One machine-readable line for scripts and tests (ports asked as 0 are known now).
  std::printf("{\"quic_port\": %d, \"tcp_port\": %d, \"tls_port\": %d, \"http_port\": %d}\n",
              int((*runtime)->quic_port()), int((*runtime)->tcp_port()), int((*runtime)->tls_port()),
              rest ? int(rest->port()) : 0);
  std::fflush(stdout);

  std::shared_ptr<const cp::AppConfig> current = std::make_shared<const cp::AppConfig>(cfg);
  dp::MonoNs next_report = 0;
  uint32_t idle = 0;
  dp::MonoNs drain_until = 0;
  auto publish = [&](dp::MonoNs now) {
    if (!rest) return;
    auto o = std::make_shared<cp::Observed>();
    o->report = cplane.MakeReport(now);
    o->uptime_ns = now - started;
    o->wall_ms = uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
    for (size_t w = 0; w < (*runtime)->workers(); ++w) {
      (*runtime)->stats(w).ForEach([&](const char* name, uint64_t v) {
        o->worker_counters.emplace_back(absl::StrCat(name, "{worker=\"", w, "\"}"), v);
      });
    }
    o->backend_counters = (*runtime)->BackendCounters();
    for (size_t b = 0; b < o->report.bridges.size(); ++b) o->traffic.push_back((*runtime)->BridgeTraffic(b));
    o->config = current;
    rest->Publish(std::move(o));
  };
  for (;;) {
    const dp::MonoNs now = clock.Now();
    const bool busy = cplane.PollOnce(now);
    if (now >= next_report) {
      publish(now);
      next_report = now + kReportEveryNs;
      if (rest) {
        for (const auto& c : rest->TakeCommands()) {
          cplane.SetBridgeEnabled(c.bridge, c.enable, now);
          Log("bridge %s %s over REST", c.bridge, c.enable ? "enabled" : "disabled");
        }
      }
    }
    if (g_reload.exchange(0)) {
      auto again = cp::LoadConfig(path);
      if (!again.ok()) {
        Log("reload refused, keeping the running config:\n%s", std::string(again.status().message()));
      } else {
        current = std::make_shared<const cp::AppConfig>(Reload(*current, *again, cplane, **runtime, now));
      }
    }
    if (g_stop && drain_until == 0) {
      Log("signal %d: draining", g_stop.load());
      cplane.Shutdown(now);
      drain_until = now + kDrainNs;
    }
    if (drain_until && (cplane.ShutdownDone() || now >= drain_until)) break;
    // Idle: nap, longer the longer it stays idle, never past the next timer or 1 ms.
    if (busy) {
      idle = 0;
    } else {
      uint64_t us = std::min<uint64_t>(50u << std::min<uint32_t>(idle++ / 16, 5), 1000);
      const dp::MonoNs next = cplane.NextDeadline();
      if (next > now) us = std::min<uint64_t>(us, (next - now) / 1000 + 1);
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    }
  }
  publish(clock.Now());
  (*runtime)->Stop();
  if (rest) rest->Stop();
  Log("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--check-config") {
    auto c = qbridge::cp::LoadConfig(argv[2]);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", std::string(c.status().message()).c_str());
      return 1;
    }
    if (!c->users_file.empty()) {
      auto u = qbridge::cp::UserTable::Load(c->users_file);
      if (!u.ok()) {
        std::fprintf(stderr, "%s\n", std::string(u.status().message()).c_str());
        return 1;
      }
    }
    for (const std::string& n : c->notes) std::printf("%s: note: %s\n", argv[2], n.c_str());
    std::printf("%s: %s\n", argv[2], qbridge::cp::CheckSummary(*c).c_str());
    return 0;
  }
  if (argc == 2 && std::string(argv[1]) == "--hash-password") {
    std::string pw;
    std::getline(std::cin, pw);
    auto h = qbridge::cp::HashPassword(pw);
    if (!h.ok()) return 1;
    std::printf("%s\n", h->c_str());
    return 0;
  }
  if (argc == 3 && std::string(argv[1]) == "--config") return Run(argv[2]);
  return Usage();
}
