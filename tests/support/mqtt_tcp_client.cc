#include "tests/support/mqtt_tcp_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "quic/connection.h"  // quic::Address

extern char** environ;

namespace qbridge::testing {
namespace {

constexpr const char* kMosquitto = "/usr/sbin/mosquitto";

absl::Status Errno(const char* what) {
  return absl::ErrnoToStatus(errno, what);
}

int64_t RemainingMs(absl::Time deadline) {
  return std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
}

}  // namespace

absl::StatusOr<uint16_t> PickFreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Errno("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const auto s = Errno("bind");
    ::close(fd);
    return s;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

bool HasIpv6Loopback() {
  const int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

absl::StatusOr<std::unique_ptr<MqttTcpClient>> MqttTcpClient::Dial(const std::string& host,
                                                                   uint16_t port,
                                                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const quic::Address a = quic::Address::FromIpPort(host, port);
  if (a.empty()) return absl::InvalidArgumentError(absl::StrCat("not an IP address: ", host));
  for (;;) {
    const int fd = ::socket(a.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Errno("socket");
    if (::connect(fd, a.sa(), a.len) == 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return std::unique_ptr<MqttTcpClient>(new MqttTcpClient(fd));
    }
    const int err = errno;
    ::close(fd);
    if (absl::Now() >= deadline)
      return absl::DeadlineExceededError(
          absl::StrCat("connect ", host, ":", port, ": ", std::strerror(err)));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<std::unique_ptr<MqttTcpClient>> MqttTcpClient::Connect(const std::string& host,
                                                                      uint16_t port,
                                                                      const mqtt::Connect& connect,
                                                                      absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  auto c = Dial(host, port, timeout);
  if (!c.ok()) return c.status();
  (*c)->set_version(connect.version);
  if (absl::Status s = (*c)->Send(connect); !s.ok()) return s;
  auto ack = (*c)->Receive(std::max(absl::ZeroDuration(), deadline - absl::Now()));
  if (!ack.ok()) return ack.status();
  const auto* ca = std::get_if<mqtt::Connack>(&ack->packet);
  if (ca == nullptr) return absl::InternalError("the first packet back was no CONNACK");
  if (ca->reason != mqtt::ReasonCode::kSuccess)
    return absl::PermissionDeniedError(absl::StrCat("CONNACK refused: ", int(ca->reason)));
  return std::move(*c);
}

MqttTcpClient::~MqttTcpClient() { ::close(fd_); }

absl::Status MqttTcpClient::Send(const mqtt::Packet& p) {
  out_.clear();
  if (!mqtt::EncodeTo(p, version_, out_))
    return absl::InvalidArgumentError(
        absl::StrCat("cannot encode ", std::string(mqtt::PacketTypeName(mqtt::TypeOf(p)))));
  size_t off = 0;
  while (off < out_.size()) {
    const ssize_t n = ::send(fd_, out_.data() + off, out_.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("send");
    }
    off += size_t(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<OwnedPacket> MqttTcpClient::Receive(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  uint8_t buf[16384];
  while (frames_.empty()) {
    pollfd pfd{fd_, POLLIN, 0};
    const int r = ::poll(&pfd, 1, int(RemainingMs(deadline)));
    if (r < 0 && errno != EINTR) return Errno("poll");
    if (r == 0) return absl::DeadlineExceededError("no packet before the deadline");
    if (r < 0) continue;
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n == 0) return absl::UnavailableError("connection closed by peer");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Errno("recv");
    }
    bytes_received_ += uint64_t(n);
    const mqtt::CodecStatus s =
        framer_.Feed(mqtt::Bytes(buf, size_t(n)), [&](const mqtt::Frame& f) {
          frames_.emplace_back(f.whole.begin(), f.whole.end());
          return true;
        });
    if (!s.ok()) return absl::DataLossError(absl::StrCat("framing: ", s.detail));
  }
  OwnedPacket out;
  out.bytes = std::move(frames_.front());
  frames_.pop_front();
  mqtt::Framer one;
  mqtt::CodecStatus decode_status;
  one.Feed(out.bytes, [&](const mqtt::Frame& f) {
    decode_status = mqtt::Decode(f.header, f.body, version_, &out.packet);
    return false;
  });
  if (!decode_status.ok())
    return absl::DataLossError(absl::StrCat("decode: ", decode_status.detail, " (",
                                            std::string(mqtt::ReasonCodeName(decode_status.code)), ")"));
  return out;
}

bool MosquittoBroker::Available() { return ::access(kMosquitto, X_OK) == 0; }

absl::StatusOr<std::unique_ptr<MosquittoBroker>> MosquittoBroker::Start(Options options) {
  if (!Available()) return absl::NotFoundError("mosquitto is not installed (tools/setup.sh)");
  std::unique_ptr<MosquittoBroker> b(new MosquittoBroker());
  b->options_ = options;
  char tmpl[] = "/tmp/qbridge-mosq-XXXXXX";
  if (!::mkdtemp(tmpl)) return Errno("mkdtemp");
  b->dir_ = tmpl;
  ::chmod(tmpl, 0777);  // mosquitto drops root to its own user: it reads the config, writes its db
  // A port picked here can be taken before mosquitto binds it; retry a few times.
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto port = PickFreePort();
    if (!port.ok()) return port.status();
    b->port_ = *port;
    if (b->Spawn()) return b;
  }
  return absl::UnavailableError(absl::StrCat("mosquitto did not start; see ", b->dir_));
}

bool MosquittoBroker::Spawn() {
  const std::string conf = dir_ + "/mosquitto.conf";
  {
    std::ofstream f(conf);
    f << "listener " << port_ << " " << options_.address << "\n"
      << "allow_anonymous true\n"
      << "max_inflight_messages 0\n"
      << "log_dest stderr\n"
      << "log_type error\n";
    if (options_.persistence) {
      // Sessions and queued messages survive a stop (saved at SIGTERM); persistent
      // subscribers get every message queued for them while they were away, however many.
      f << "persistence true\n"
        << "persistence_location " << dir_ << "/\n"
        << "autosave_interval 0\n"
        << "max_queued_messages 0\n"
        << "max_queued_bytes 0\n";
    } else {
      f << "persistence false\n";
    }
    if (options_.queue_qos0) f << "queue_qos0_messages true\n";
    // mosquitto drops root for its own user: it reads copies in its own directory.
    auto copy = [&](const std::string& from, const char* name) {
      const std::string to = dir_ + "/" + name;
      std::error_code ec;
      std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
      ::chmod(to.c_str(), 0644);
      return to;
    };
    if (!options_.certfile.empty()) {
      f << "certfile " << copy(options_.certfile, "tls-cert.pem") << "\n"
        << "keyfile " << copy(options_.keyfile, "tls-key.pem") << "\n";
      if (!options_.cafile.empty()) {
        f << "cafile " << copy(options_.cafile, "tls-ca.pem") << "\n"
          << "require_certificate true\n";
      }
    }
  }
  const std::string log = dir_ + "/mosquitto.log";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  std::string prog = kMosquitto, c = "-c";
  char* argv[] = {prog.data(), c.data(), const_cast<char*>(conf.c_str()), nullptr};
  pid_t pid;
  const int rc = ::posix_spawn(&pid, kMosquitto, &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return false;
  pid_ = pid;
  // Ready when it accepts a TCP connection; bounded wait.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < deadline) {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid_ = -1;
      return false;  // exited (port taken?)
    }
    auto probe = MqttTcpClient::Dial(options_.address, port_, absl::Milliseconds(50));
    if (probe.ok()) return true;
  }
  Stop();
  return false;
}

void MosquittoBroker::Stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status;
  for (int i = 0; i < 250 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (::waitpid(pid_, &status, WNOHANG) == 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
}

absl::Status MosquittoBroker::Restart() {
  Stop();
  // The port was ours a moment ago; another process may take it meanwhile, so retry briefly.
  for (int attempt = 0; attempt < 20; ++attempt) {
    if (Spawn()) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return absl::UnavailableError(absl::StrCat("mosquitto did not restart on port ", port_, "; see ", dir_));
}

MosquittoBroker::~MosquittoBroker() {
  Stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

}  // namespace qbridge::testing
