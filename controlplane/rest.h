// REST and metrics on [http_server] (cpp-httplib, its own thread): NanoMQ's v4 bridge and
// client endpoints plus Prometheus text at /metrics, behind HTTP Basic auth. It never touches
// the controlplane's state: it serves the latest report the controlplane loop copied out and
// queues commands (bridge switch) for the loop to run.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
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
  // The configuration running now (a reload replaces it); null: the one REST started with.
  std::shared_ptr<const AppConfig> config;
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
};

}  // namespace qbridge::cp
