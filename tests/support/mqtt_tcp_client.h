// A blocking MQTT-over-TCP client built only on qbridge's codec and framer, for tests and
// tools that talk to real brokers (mosquitto). Not for the dataplane: it allocates per
// packet and blocks.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mqtt/codec.h"
#include "mqtt/framer.h"

namespace qbridge::testing {

// A received packet with the bytes its views point into.
struct OwnedPacket {
  std::vector<uint8_t> bytes;
  mqtt::Packet packet;
};

class MqttTcpClient {
 public:
  // Opens a TCP connection to host:port (numeric IPv4) within `timeout`.
  static absl::StatusOr<std::unique_ptr<MqttTcpClient>> Dial(const std::string& host,
                                                             uint16_t port,
                                                             absl::Duration timeout);
  // Dials, sends `connect` (its version becomes the client's) and waits for a CONNACK:
  // the client once one came back with success within `timeout`.
  static absl::StatusOr<std::unique_ptr<MqttTcpClient>> Connect(const std::string& host,
                                                                uint16_t port,
                                                                const mqtt::Connect& connect,
                                                                absl::Duration timeout);
  ~MqttTcpClient();

  void set_version(mqtt::Version v) { version_ = v; }
  mqtt::Version version() const { return version_; }

  absl::Status Send(const mqtt::Packet& p);
  // The next packet, decoded with the current version, or DeadlineExceeded.
  absl::StatusOr<OwnedPacket> Receive(absl::Duration timeout);

  uint64_t bytes_received() const { return bytes_received_; }

 private:
  explicit MqttTcpClient(int fd) : fd_(fd) {}

  int fd_;
  mqtt::Version version_ = mqtt::Version::k311;
  mqtt::Framer framer_;
  std::deque<std::vector<uint8_t>> frames_;
  std::vector<uint8_t> out_;
  uint64_t bytes_received_ = 0;
};

// A mosquitto broker on a loopback port, in its own temporary directory; stopped (and
// its directory removed) by the destructor.
class MosquittoBroker {
 public:
  struct Options {
    // Sessions and queued messages kept across Stop/Restart, with no cap on what a
    // persistent subscriber may have queued.
    bool persistence = false;
    // QoS 0 too is queued for a persistent subscriber while it is away (queue_qos0_messages).
    bool queue_qos0 = false;
    std::string address = "127.0.0.1";  // where it listens ("::1": IPv6)
    // MQTT over TLS on the port instead when set: its certificate and key, and with
    // `cafile` client certificates required and checked against it.
    std::string certfile = {}, keyfile = {}, cafile = {};
  };
  static absl::StatusOr<std::unique_ptr<MosquittoBroker>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<MosquittoBroker>> Start() { return Start(Options{}); }
  ~MosquittoBroker();
  uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }
  int pid() const { return pid_; }  // to freeze it (SIGSTOP) and thaw it (SIGCONT)
  static bool Available();

  // An outage: the broker stops (SIGTERM: it saves its sessions when persistent) ...
  void Stop();
  // ... and comes back on the same port with the same configuration.
  absl::Status Restart();

 private:
  MosquittoBroker() = default;
  bool Spawn();  // starts mosquitto on port_; true once it accepts connections
  Options options_;
  int pid_ = -1;
  uint16_t port_ = 0;
  std::string dir_;
};

// A free TCP port on 127.0.0.1 at the time of the call.
absl::StatusOr<uint16_t> PickFreePort();

// Whether this host has ::1 (containers may run with IPv6 off): IPv6 tests skip without it.
bool HasIpv6Loopback();

}  // namespace qbridge::testing
