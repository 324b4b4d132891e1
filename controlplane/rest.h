// REST and metrics on [http_server] (cpp-httplib, its own thread): NanoMQ's v4 bridge and
// client endpoints plus Prometheus text at /metrics, the dashboard's own endpoints (history,
// config) and its pages under /dashboard/ (docs/dashboard.md), all behind HTTP Basic auth. It
// never touches the controlplane's state: it serves the latest report the controlplane loop
// copied out and queues commands (bridge switch) for the loop to run.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "controlplane/config.h"
#include "controlplane/controlplane.h"
#include "dataplane/api/counters.h"

namespace httplib {
class Server;
}

namespace qbridge::cp {

// Everything REST shows, as of `report.at`.
struct Observed {
  Controlplane::Report report;
  std::vector<std::pair<std::string, uint64_t>> worker_counters;   // name{labels} -> value
  std::vector<std::pair<std::string, uint64_t>> backend_counters;
  std::vector<dp::BridgeTrafficTotals> traffic;                   // per bridge
  uint64_t uptime_ns = 0;
  uint64_t wall_ms = 0;  // Unix time of the report, in ms (the dashboard's time axis)
  // The configuration running now (a reload replaces it); null: the one REST started with.
  std::shared_ptr<const AppConfig> config;
};

// The last 15 minutes as one sample per second: message rates in and out, per bridge, drops
// and sessions (the dashboard's overview charts). Fed with every report (on the controlplane
// loop, in RestServer::Publish); a sample is taken when a second has passed since the last
// one. Samples are numbered, so a reader asks for what came after the last it has (the
// wall clock may step).
class History {
 public:
  static constexpr size_t kSamples = 900;
  struct Bridge {
    std::string name;
    double tx = 0, rx = 0;  // PUBLISHes per second to and from the upstream
  };
  struct Sample {
    uint64_t seq = 0;  // 1, 2, ...
    uint64_t wall_ms = 0;
    double in = 0, out = 0;  // PUBLISHes per second received and sent, all connections
    // Messages per second not delivered: every bridge's drops (any reason) and deliveries
    // refused by a full client queue. Not: PUBLISHes no subscriber wanted (drop_no_route).
    double drops = 0;
    size_t sessions = 0;
    std::vector<Bridge> bridges;
  };

  void Add(const Observed& o);
  // Samples numbered after `since`, oldest first.
  std::vector<Sample> Since(uint64_t since) const;

 private:
  struct Totals {
    uint64_t at_ns = 0, in = 0, out = 0, drops = 0;
    std::vector<std::pair<uint64_t, uint64_t>> bridges;  // tx, rx
  };
  std::deque<Sample> samples_;
  std::optional<Totals> last_;
  uint64_t seq_ = 0;
};

class RestServer {
 public:
  struct Command {
    std::string bridge;
    bool enable;
  };

  static absl::StatusOr<std::unique_ptr<RestServer>> Start(const HttpServerConfig& http,
                                                           const AppConfig* config);
  ~RestServer();

  uint16_t port() const { return port_; }
  // The loop publishes what REST shows, and takes the commands REST queued.
  void Publish(std::shared_ptr<const Observed> o);
  std::vector<Command> TakeCommands();
  void Stop();

  // The Prometheus text for `o` (public for tests).
  static std::string Prometheus(const Observed& o, const AppConfig& config);

 private:
  RestServer() = default;
  std::shared_ptr<const Observed> Current();

  const AppConfig* config_ = nullptr;
  HttpServerConfig http_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::shared_ptr<const Observed> observed_;
  std::vector<Command> commands_;
  // Its own lock: a reader copying samples never holds up Publish's swap of observed_.
  std::mutex history_mu_;
  History history_;
};

}  // namespace qbridge::cp
