// The runtime behind dataplane/api/runtime.h: TLS contexts, one worker per core with its
// own backend handle and thread.
#include "dataplane/api/runtime.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <atomic>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "dataplane/dpdk/dpdk_io.h"
#include "dataplane/dpdk/eal.h"
#include "dataplane/socket_io.h"
#include "dataplane/worker/worker.h"
#include "quic/tls.h"

namespace qbridge::dp {
namespace {

quic::TransportConfig Transport(const QuicSettings& s) {
  quic::TransportConfig t;
  t.idle_timeout_ns = s.idle_timeout_ns;
  t.keepalive_ns = s.keepalive_ns;
  t.handshake_timeout_ns = s.handshake_timeout_ns;
  t.disconnect_timeout_ns = s.disconnect_timeout_ns;
  t.initial_rtt_ns = s.initial_rtt_ns;
  t.max_ack_delay_ns = s.max_ack_delay_ns;
  t.cc = s.congestion_control == "bbr"    ? quic::CcAlgo::kBbr
         : s.congestion_control == "reno" ? quic::CcAlgo::kReno
                                          : quic::CcAlgo::kCubic;
  t.max_peer_bidi_streams = s.max_peer_bidi_streams;
  return t;
}

quic::TlsConfig Tls(const TlsFiles& f, const std::string& default_name) {
  quic::TlsConfig c;
  c.certfile = f.certfile;
  c.keyfile = f.keyfile;
  c.cacertfile = f.cacertfile;
  c.verify_peer = f.verify_peer;
  c.insecure = !f.verify_peer;  // the config said verify_peer = false in so many words
  c.server_name = f.server_name.empty() ? default_name : f.server_name;
  return c;
}

absl::StatusOr<std::pair<net::Ipv4, uint8_t>> ParseCidr(const std::string& s) {
  std::vector<std::string> parts = absl::StrSplit(s, '/');
  in_addr a{};
  int len = 32;
  if (parts.empty() || parts.size() > 2 || ::inet_pton(AF_INET, parts[0].c_str(), &a) != 1 ||
      (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &len) || len < 1 || len > 32))) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address/prefix: '", s, "'"));
  }
  return std::make_pair(net::Ipv4(ntohl(a.s_addr)), uint8_t(len));
}

// "2001:db8::2/64" (or an address alone: /128).
absl::StatusOr<std::pair<net::Ipv6, uint8_t>> ParseCidr6(const std::string& s) {
  std::vector<std::string> parts = absl::StrSplit(s, '/');
  net::Ipv6 a{};
  int len = 128;
  if (parts.empty() || parts.size() > 2 || ::inet_pton(AF_INET6, parts[0].c_str(), a.data()) != 1 ||
      (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &len) || len < 1 || len > 128))) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv6 address/prefix: '", s, "'"));
  }
  return std::make_pair(a, uint8_t(len));
}

// The port of a socket address, IPv4 or IPv6 (sin_port and sin6_port share their offset).
in_port_t PortOf(const quic::Address& a) { return reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_port; }

// A worker's kernel sockets: the listener's and the bridges' own, one per address family.
// Sends go out of the bridge socket whose family and port the path names, else the
// listener's.
class SocketPairIo {
 public:
  SocketPairIo(UdpSocket* south, UdpSocket* north4, UdpSocket* north6)
      : south_(south), north_{north4, north6} {}
  template <typename Fn>
  size_t Receive(uint64_t, Fn&& fn) {
    size_t n = 0;
    if (south_) n += south_->Receive(fn);
    for (UdpSocket* s : north_)
      if (s) n += s->Receive(fn);
    return n;
  }
  void Send(const quic::Path& path, std::span<const uint8_t> d, size_t seg) {
    for (UdpSocket* s : north_) {
      if (s && s->local().storage.ss_family == path.local.storage.ss_family &&
          PortOf(s->local()) == PortOf(path.local)) {
        return s->Send(path, d, seg);
      }
    }
    if (south_) south_->Send(path, d, seg);
  }

 private:
  UdpSocket* south_;
  UdpSocket* north_[2];  // IPv4, IPv6 (either may be absent)
};

class RuntimeImpl final : public Runtime {
 public:
  ~RuntimeImpl() override {
    Stop();
    workers_.clear();
    dpdk_.clear();  // the queues before their port
    dpdk_port_.reset();
    for (int fd : tcp_fds_) ::close(fd);
    for (int fd : tls_fds_) ::close(fd);
  }

  void Stop() override {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  size_t workers() const override { return workers_.size(); }
  const WorkerStats& stats(size_t w) const override { return workers_[w]->stats(); }
  uint16_t quic_port() const override { return quic_port_; }
  uint16_t tcp_port() const override { return tcp_port_; }
  uint16_t tls_port() const override { return tls_port_; }
  BridgeTrafficTotals BridgeTraffic(size_t bridge) const override {
    BridgeTrafficTotals t;
    if (bridge >= bridges_) return t;
    for (const auto& w : workers_) {
      const dp::BridgeTraffic& b = w->bridge_traffic(bridge);
      t.tx_msgs += b.tx_msgs.Get();
      t.resent += b.resent.Get();
      t.tx_bytes += b.tx_bytes.Get();
      t.rx_msgs += b.rx_msgs.Get();
      t.rx_bytes += b.rx_bytes.Get();
#define QBRIDGE_X(name) t.drop_##name += b.drop_##name.Get();
      QBRIDGE_BRIDGE_DROPS(QBRIDGE_X)
#undef QBRIDGE_X
      t.srtt_ns += b.srtt_ns.Get();  // gauges: only the bridge's own worker sets them
      t.min_rtt_ns += b.min_rtt_ns.Get();
      t.cwnd_bytes += b.cwnd_bytes.Get();
      t.bytes_in_flight += b.bytes_in_flight.Get();
      t.inflight += b.inflight.Get();
      t.queued += b.queued.Get();
      t.held_back += b.held_back.Get();
#define QBRIDGE_X(name, type, help) t.name += b.name.Get();
      QBRIDGE_BRIDGE_STORE(QBRIDGE_X)
#undef QBRIDGE_X
    }
    return t;
  }
  std::vector<std::pair<std::string, uint64_t>> BackendCounters() const override {
    std::vector<std::pair<std::string, uint64_t>> out;
    for (size_t i = 0; i < sockets_.size(); ++i) {
      const UdpStats& s = sockets_[i]->stats();
#define QBRIDGE_X(name) out.emplace_back(absl::StrCat("udp_south_", #name, "{worker=\"", i, "\"}"), s.name);
      QBRIDGE_UDP_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X
    }
    for (size_t i = 0; i < north_sockets_.size(); ++i) {
      for (int f = 0; f < 2; ++f) {
        if (!north_sockets_[i][f]) continue;
        const UdpStats& s = north_sockets_[i][f]->stats();
        const char* prefix = f == 0 ? "udp_north_" : "udp_north6_";
#define QBRIDGE_X(name) out.emplace_back(absl::StrCat(prefix, #name, "{worker=\"", i, "\"}"), s.name);
        QBRIDGE_UDP_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X
      }
    }
    for (size_t q = 0; q < dpdk_.size(); ++q) {
      const DpdkIoStats& s = dpdk_[q]->stats();
#define QBRIDGE_X(name) out.emplace_back(absl::StrCat("dpdk_", #name, "{queue=\"", q, "\"}"), s.name.Get());
      QBRIDGE_DPDK_COUNTERS(QBRIDGE_X)
#undef QBRIDGE_X
      for (size_t d = 0; d < s.rx_drops.size(); ++d) {
        if (s.rx_drops[d].Get() == 0) continue;  // reasons never seen stay out of the scrape
        out.emplace_back(absl::StrCat("dpdk_rx_drops{queue=\"", q, "\",reason=\"",
                                      net::DropName(net::Drop(d)), "\"}"),
                         s.rx_drops[d].Get());
      }
    }
    // Bridge ports the NIC steers to their worker's queue itself (0: the workers do it).
    if (dpdk_port_) out.emplace_back("dpdk_flow_rules", dpdk_port_->flow_rules());
    return out;
  }

  absl::Status Init(const RuntimeConfig& cfg, RingMesh* rings, std::vector<ActivityTable*> activity) {
    worker_cpus_ = cfg.worker_cpus;
    if (!worker_cpus_.empty()) {
      cpu_set_t allowed;
      CPU_ZERO(&allowed);
      ::sched_getaffinity(0, sizeof(allowed), &allowed);
      for (int cpu : worker_cpus_) {
        if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed))
          return absl::InvalidArgumentError(absl::StrCat("dataplane.worker_cpus: CPU ", cpu,
                                                         " is not available to this process"));
      }
    }
    if (cfg.workers < 1 || size_t(cfg.workers) != rings->workers() ||
        activity.size() != size_t(cfg.workers)) {
      return absl::InvalidArgumentError("workers, rings and activity tables disagree");
    }
    // One server TLS context per worker: a context's 0-RTT anti-replay table is not shared
    // between threads. (Tickets are sealed per context, so a client that resumes on
    // another worker gets a full handshake.)
    for (int i = 0; cfg.listener && i < cfg.workers; ++i) {
      auto t = quic::TlsContext::Create(quic::TlsContext::Side::kServer, Tls(cfg.listener->tls, ""));
      if (!t.ok()) return t.status();
      server_tls_.push_back(std::move(*t));
    }
    bridges_ = cfg.bridges.size();
    store_ = cfg.store;
    std::vector<BridgeDial> dials;
    for (const BridgeDialSettings& b : cfg.bridges) {
      auto d = MakeDial(b);
      if (!d.ok()) return d.status();
      dials.push_back(std::move(*d));
    }

    // One listening socket per worker (SO_REUSEPORT) for each TCP listener.
    auto listen = [&](const std::string& ip, uint16_t port, const char* what, uint16_t* bound,
                      std::vector<int>* fds) -> absl::Status {
      for (int i = 0; i < cfg.workers; ++i) {
        const quic::Address a = quic::Address::FromIpPort(ip, *bound ? *bound : port);
        if (a.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ".bind"));
        const int fd = ::socket(a.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return absl::ErrnoToStatus(errno, what);
        fds->push_back(fd);
        const int one = 1;
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (cfg.workers > 1) ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (::bind(fd, a.sa(), a.len) != 0 || ::listen(fd, 1024) != 0) {
          return absl::ErrnoToStatus(errno, absl::StrCat(what, " on ", a.ToString()));
        }
        sockaddr_storage ss{};
        socklen_t len = sizeof(ss);
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
        *bound = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      }
      return absl::OkStatus();
    };
    if (cfg.tcp_listener) {
      if (absl::Status st = listen(cfg.tcp_listener->ip, cfg.tcp_listener->port, "listeners.tcp", &tcp_port_, &tcp_fds_);
          !st.ok())
        return st;
    }
    if (cfg.tls_listener) {
      // One context for every worker: after creation it is only read (credentials,
      // priorities, the ticket key), and a ticket from one worker resumes on another.
      quic::TlsConfig tc = Tls(cfg.tls_listener->tls, "");
      tc.stream = true;
      tc.fail_if_no_peer_cert = cfg.tls_listener->fail_if_no_peer_cert;
      auto t = quic::TlsContext::Create(quic::TlsContext::Side::kServer, tc);
      if (!t.ok()) return t.status();
      tcp_tls_ = std::move(*t);
      if (absl::Status st = listen(cfg.tls_listener->ip, cfg.tls_listener->port, "listeners.ssl", &tls_port_, &tls_fds_);
          !st.ok())
        return st;
    }
    if (cfg.backend == "dpdk") {
      if (absl::Status s = InitEal(cfg.eal_args); !s.ok()) return s;
      auto cidr = ParseCidr(cfg.address);
      if (!cidr.ok()) return cidr.status();
      DpdkPortConfig pc;
      pc.port_id = cfg.port_id;
      pc.queues = uint16_t(cfg.workers);
      pc.rx_desc = cfg.rx_desc;
      pc.tx_desc = cfg.tx_desc;
      pc.mbufs = cfg.mbufs;
      pc.checksum_offload = cfg.checksum_offload;
      auto port = DpdkPort::Start(pc);
      if (!port.ok()) return port.status();
      dpdk_port_ = std::move(*port);
      DpdkIoConfig dc;
      dc.ip = cidr->first;
      dc.prefix_len = cidr->second;
      if (!cfg.gateway.empty()) {
        auto gw = ParseCidr(cfg.gateway);
        if (!gw.ok()) return gw.status();
        dc.gateway = gw->first;
      }
      if (cfg.address6.empty() && !cfg.gateway6.empty()) {
        return absl::InvalidArgumentError("dataplane.gateway6 needs dataplane.address6");
      }
      if (!cfg.address6.empty()) {
        auto c6 = ParseCidr6(cfg.address6);
        if (!c6.ok()) return c6.status();
        const net::Ipv6& a6 = c6->first;
        if (a6[0] == 0xff || (a6[0] == 0xfe && (a6[1] & 0xc0) == 0x80) ||
            std::all_of(a6.begin(), a6.end(), [](uint8_t b) { return b == 0; })) {
          return absl::InvalidArgumentError(absl::StrCat("dataplane.address6 '", cfg.address6,
                                                         "': a global or unique-local unicast address, please "
                                                         "(the link-local one is made from the MAC)"));
        }
        dc.ip6 = c6->first;
        dc.prefix6_len = c6->second;
        dpdk_ip6_ = cfg.address6.substr(0, cfg.address6.find('/'));
        if (!cfg.gateway6.empty()) {
          auto g6 = ParseCidr6(cfg.gateway6);
          if (!g6.ok()) return g6.status();
          dc.gateway6 = g6->first;
        }
      }
      const uint16_t port_no = cfg.listener ? cfg.listener->port : 14567;
      quic_port_ = port_no;
      // Bridges dial from a UDP port per worker, so whichever queue the upstream's datagrams
      // land on, the port names the worker that owns the connection (CIDs of our client
      // connections are the upstream's choice to route on, not ours). One worker keeps
      // the listener's port.
      std::vector<uint16_t> north_ports;
      if (cfg.workers > 1) {
        uint16_t r = 0;
        quic::RandomBytes(reinterpret_cast<uint8_t*>(&r), sizeof(r));
        uint16_t base = uint16_t(49152 + r % (16384 - 64 * 2));
        if (port_no >= base && port_no < base + cfg.workers) base = uint16_t(port_no + 1);
        for (int i = 0; i < cfg.workers; ++i) north_ports.push_back(uint16_t(base + i));
      } else {
        north_ports.push_back(port_no);
      }
      dc.udp_ports = north_ports;
      if (std::find(dc.udp_ports.begin(), dc.udp_ports.end(), port_no) == dc.udp_ports.end())
        dc.udp_ports.push_back(port_no);
      dpdk_ip_ = absl::StrCat((dc.ip >> 24) & 255, ".", (dc.ip >> 16) & 255, ".", (dc.ip >> 8) & 255, ".",
                              dc.ip & 255);
      north_ports_ = north_ports;
      // Where the NIC can, it delivers each worker's bridge port to that worker's queue;
      // where it cannot (virtual PMDs, a TAP without TC flower), workers forward what lands
      // on the wrong queue, as they do without rules.
      for (int i = 0; cfg.workers > 1 && i < cfg.workers; ++i) {
        if (absl::Status s = dpdk_port_->SteerUdpPort(north_ports[size_t(i)], uint16_t(i)); !s.ok()) {
          std::fprintf(stderr, "qbridge: %s; flow rules for %d of %d workers' bridge ports, the "
                       "workers steer the rest\n", std::string(s.message()).c_str(), i, cfg.workers);
          break;
        }
      }
      for (int i = 0; i < cfg.workers; ++i) {
        dpdk_.push_back(DpdkIo::Attach(dpdk_port_.get(), uint16_t(i), dc));
        std::vector<BridgeDial> mine = dials;
        for (auto& d : mine) {
          if (absl::Status s = PlaceDial(d, size_t(i)); !s.ok()) return s;
        }
        if (absl::Status s = MakeWorker(cfg, uint16_t(i), mine, rings, activity[size_t(i)],
                                        cfg.workers > 1 ? north_ports : std::vector<uint16_t>{});
            !s.ok()) {
          return s;
        }
      }
      for (int i = 0; i < cfg.workers; ++i) {
        Worker* w = workers_[size_t(i)].get();
        DpdkIo* io_ptr = dpdk_[size_t(i)].get();
        threads_.emplace_back([this, w, io_ptr, nap = cfg.idle_sleep_us] { Loop(*w, *io_ptr, nap); });
      }
      return absl::OkStatus();
    }
    if (cfg.backend != "socket") {
      return absl::InvalidArgumentError(absl::StrCat("unknown backend '", cfg.backend, "'"));
    }
    // Each worker: the listener's socket (shared by SO_REUSEPORT between workers), and for
    // bridges a socket of its own, so an upstream's datagrams always reach the worker that
    // dialled it (a shared socket would hash them to any worker).
    uint16_t port = cfg.listener ? cfg.listener->port : 0;
    for (int i = 0; cfg.listener && i < cfg.workers; ++i) {
      UdpOptions o;
      o.reuseport = cfg.workers > 1;
      auto s = UdpSocket::Bind(quic::Address::FromIpPort(cfg.listener->ip, port), o);
      if (!s.ok()) return s.status();
      port = ntohs(reinterpret_cast<const sockaddr_in*>(&(*s)->local().storage)->sin_port);
      sockets_.push_back(std::move(*s));
    }
    quic_port_ = port;
    std::vector<std::vector<BridgeDial>> per_worker(size_t(cfg.workers), dials);
    // North sockets per worker whenever there are bridges (or may be: a reload can add
    // QUIC bridges), so an upstream's datagrams reach the worker that dialled it: one on
    // `local_ip`, or without it one IPv4 and one IPv6 wildcard socket (the latter only where
    // the host has IPv6), each dialling from the source address the kernel picks.
    local_ip_ = cfg.local_ip;
    for (int i = 0; i < cfg.workers; ++i) {
      auto& pair = north_sockets_.emplace_back();
      if (!cfg.local_ip.empty()) {
        const quic::Address a = quic::Address::FromIpPort(cfg.local_ip, 0);
        if (a.empty()) return absl::InvalidArgumentError(absl::StrCat("local_ip: not an address: '", cfg.local_ip, "'"));
        auto s = UdpSocket::Bind(a);
        if (!s.ok()) return s.status();
        pair[a.storage.ss_family == AF_INET6 ? 1 : 0] = std::move(*s);
      } else {
        auto s4 = UdpSocket::Bind(quic::Address::FromIpPort("0.0.0.0", 0));
        if (!s4.ok()) return s4.status();
        pair[0] = std::move(*s4);
        if (auto s6 = UdpSocket::Bind(quic::Address::FromIpPort("::", 0)); s6.ok()) pair[1] = std::move(*s6);
      }
      for (auto& d : per_worker[size_t(i)]) {
        if (absl::Status st = PlaceDial(d, size_t(i)); !st.ok()) return st;
      }
    }
    for (int i = 0; i < cfg.workers; ++i) {
      if (absl::Status s = MakeWorker(cfg, uint16_t(i), per_worker[size_t(i)], rings, activity[size_t(i)]); !s.ok())
        return s;
    }
    for (int i = 0; i < cfg.workers; ++i) {
      Worker* w = workers_[i].get();
      UdpSocket* south = cfg.listener ? sockets_[i].get() : nullptr;
      UdpSocket* north4 = north_sockets_[size_t(i)][0].get();
      UdpSocket* north6 = north_sockets_[size_t(i)][1].get();
      threads_.emplace_back([this, w, south, north4, north6, nap = cfg.idle_sleep_us] {
        SocketPairIo io(south, north4, north6);
        Loop(*w, io, nap);
      });
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<uint64_t>> PrepareBridge(const BridgeDialSettings& settings) override {
    if (bridges_.load() >= Worker::kMaxBridges) return absl::ResourceExhaustedError("64 bridges at most");
    if (settings.store && store_.dir.empty()) return absl::FailedPreconditionError("store: no [store] dir");
    auto d = MakeDial(settings);
    if (!d.ok()) return d.status();
    std::vector<uint64_t> out;
    for (size_t i = 0; i < workers_.size(); ++i) {
      auto mine = std::make_unique<BridgeDial>(*d);
      if (absl::Status s = PlaceDial(*mine, i); !s.ok()) {
        for (uint64_t h : out) delete reinterpret_cast<BridgeDial*>(h);
        return s;
      }
      out.push_back(reinterpret_cast<uint64_t>(mine.release()));
    }
    ++bridges_;
    return out;
  }

 private:
  // A bridge's dial settings with its TLS contexts (kept for the runtime's life: workers
  // hold pointers to them), without the local addresses (PlaceDial).
  absl::StatusOr<BridgeDial> MakeDial(const BridgeDialSettings& b) {
    BridgeDial d;
    d.remote = quic::Address::FromIpPort(b.ip, b.port);
    if (d.remote.empty()) return absl::InvalidArgumentError(absl::StrCat("bridge address '", b.ip, "'"));
    d.tcp = b.tcp;
    if (!b.tcp || b.tls_tcp) {
      quic::TlsConfig tc = Tls(b.tls, b.ip);
      tc.stream = b.tcp;
      auto t = quic::TlsContext::Create(quic::TlsContext::Side::kClient, tc);
      if (!t.ok()) return t.status();
      d.tls = t->get();
      client_tls_.push_back(std::move(*t));
    }
    d.transport = Transport(b.quic);
    d.data_streams = b.data_streams;
    d.priorities = b.priorities;
    d.zero_rtt = b.zero_rtt;
    d.version = b.proto_ver == 5 ? mqtt::Version::k5 : b.proto_ver == 4 ? mqtt::Version::k311 : mqtt::Version::k31;
    d.max_queue = b.max_queue;
    d.qos0_backpressure = b.qos0_backpressure;
    d.worker = b.worker;
    if (b.store) {
      d.store.on = true;
      d.store.log.dir = store_.dir + "/" + b.name;
      d.store.log.fsync = store_.fsync == "always" ? store::Fsync::kAlways
                          : store_.fsync == "off"  ? store::Fsync::kOff
                                                   : store::Fsync::kBatch;
      d.store.log.commit_delay_ns = store_.commit_delay_ns;
      d.store.log.segment_bytes = store_.segment_bytes;
      d.store.max_bytes = b.store_max_bytes;
      d.store.max_messages = b.store_max_messages;
      d.store.qos0 = b.store_qos0;
      d.store.memory_bytes = b.store_memory;
    }
    for (const auto& h : b.hybrid) {
      BridgeDial::Alternate a;
      a.remote = quic::Address::FromIpPort(h.ip, h.port);
      if (a.remote.empty()) return absl::InvalidArgumentError(absl::StrCat("hybrid server '", h.ip, "'"));
      a.tcp = h.tcp;
      if (!h.tcp || h.tls) {
        TlsFiles files = b.tls;
        files.server_name = h.server_name;
        quic::TlsConfig tc = Tls(files, h.ip);
        tc.stream = h.tcp;
        auto t = quic::TlsContext::Create(quic::TlsContext::Side::kClient, tc);
        if (!t.ok()) return t.status();
        a.tls = t->get();
        client_tls_.push_back(std::move(*t));
      }
      d.alternates.push_back(a);
    }
    return d;
  }

  // Fills in where worker `w` dials from: its bridge port on the DPDK address, or its own
  // north socket's port with the source address the kernel picks.
  absl::Status PlaceDial(BridgeDial& d, size_t w) {
    if (!dpdk_.empty()) {
      // From our address of the upstream's family (an IPv6 upstream without address6 is
      // unreachable: its sends count as no route).
      auto local_for = [&](const quic::Address& remote) {
        const bool v6 = remote.storage.ss_family == AF_INET6 && !dpdk_ip6_.empty();
        return quic::Address::FromIpPort(v6 ? dpdk_ip6_ : dpdk_ip_, north_ports_[w]);
      };
      d.local = local_for(d.remote);
      for (auto& a : d.alternates) a.local = local_for(a.remote);
      return absl::OkStatus();
    }
    bool quic = !d.tcp;
    for (const auto& a : d.alternates) quic |= !a.tcp;
    if (!quic) return absl::OkStatus();
    if (w >= north_sockets_.size())
      return absl::FailedPreconditionError("no QUIC bridge socket (none was configured at start): restart");
    // The bridge socket of the upstream's family. On a wildcard socket the worker asks the
    // kernel for the source address at each dial (routes come and go: a WAN that is down at
    // boot, DHCP, failover); no socket of that family leaves `local` empty, and the dial
    // fails (and backs off) with a log line.
    auto place = [&](const quic::Address& remote, quic::Address* local, bool* pick_source) {
      const UdpSocket* s = north_sockets_[w][remote.storage.ss_family == AF_INET6 ? 1 : 0].get();
      *local = s ? s->local() : quic::Address{};
      *pick_source = s && (local_ip_.empty() || local_ip_ == "0.0.0.0" || local_ip_ == "::");
    };
    if (!d.tcp) place(d.remote, &d.local, &d.pick_source);
    for (auto& a : d.alternates) {
      if (!a.tcp) place(a.remote, &a.local, &a.pick_source);
    }
    return absl::OkStatus();
  }

  absl::Status MakeWorker(const RuntimeConfig& cfg, uint16_t core, const std::vector<BridgeDial>& dials,
                          RingMesh* rings, ActivityTable* activity,
                          std::vector<uint16_t> north_ports = {}) {
    WorkerConfig wc;
    wc.core = core;
    // Only datagrams to the listener's port reach the server endpoint: the bridge sockets
    // (wildcard, any interface) are no second way in.
    wc.listen_port = cfg.listener ? quic_port_ : 0;
    wc.north_ports = std::move(north_ports);
    wc.max_conns = activity->size();
    wc.max_mqueue_len = cfg.max_mqueue_len;
    if (cfg.listener) {
      wc.server_tls = server_tls_[core].get();
      wc.endpoint.transport = Transport(cfg.listener->quic);
      wc.endpoint.max_connections = cfg.listener->max_connections;
      wc.endpoint.retry = cfg.listener->retry == "off"      ? quic::RetryMode::kOff
                          : cfg.listener->retry == "always" ? quic::RetryMode::kAlways
                                                            : quic::RetryMode::kUnderLoad;
      wc.endpoint.secret = secret_;
    }
    // Every worker knows every bridge (the controlplane dials a bridge on its own worker).
    wc.bridges = dials;
    if (core < tcp_fds_.size()) wc.tcp_listen_fd = tcp_fds_[core];
    if (core < tls_fds_.size()) wc.tls_listen_fd = tls_fds_[core], wc.tcp_tls = tcp_tls_.get();
    auto w = Worker::Create(std::move(wc), rings, activity);
    if (!w.ok()) return w.status();
    workers_.push_back(std::move(*w));
    return absl::OkStatus();
  }

  // Polls; after idle iterations it naps, longer the longer it stays idle (up to 1 ms, which
  // bounds how late a controlplane message, a PINGREQ say, is picked up when all is quiet).
  template <typename Io>
  void Loop(Worker& w, Io& io, uint32_t nap_us) {
    if (w.core() < worker_cpus_.size()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(worker_cpus_[w.core()], &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    SystemClock clock;
    uint32_t idle = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
      if (w.PollOnce(io, clock.Now())) {
        idle = 0;
      } else if (nap_us) {
        const uint32_t us = std::min<uint32_t>(nap_us << std::min<uint32_t>(idle++ / 16, 5), 1000);
        std::this_thread::sleep_for(std::chrono::microseconds(us));
      }
    }
  }

  std::atomic<bool> stop_{false};
  std::vector<int> worker_cpus_;
  std::vector<std::unique_ptr<quic::TlsContext>> server_tls_;  // per worker
  std::vector<std::unique_ptr<quic::TlsContext>> client_tls_;
  std::vector<std::unique_ptr<UdpSocket>> sockets_;        // the listener's, per worker
  // Bridges' sockets per worker: IPv4, IPv6 (either may be absent).
  std::vector<std::array<std::unique_ptr<UdpSocket>, 2>> north_sockets_;
  std::unique_ptr<DpdkPort> dpdk_port_;        // destroyed after its queues' DpdkIo
  std::vector<std::unique_ptr<DpdkIo>> dpdk_;  // per worker (queue)
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::vector<uint8_t> secret_ = [] {
    std::vector<uint8_t> s(32);
    quic::RandomBytes(s.data(), s.size());
    return s;
  }();
  uint16_t quic_port_ = 0;
  uint16_t tcp_port_ = 0;
  std::vector<int> tcp_fds_;  // one listening socket per worker (SO_REUSEPORT)
  uint16_t tls_port_ = 0;
  std::vector<int> tls_fds_;  // [listeners.ssl]: the same
  std::unique_ptr<quic::TlsContext> tcp_tls_;
  std::atomic<size_t> bridges_{0};
  RuntimeConfig::Store store_;         // [store], for every bridge's dial
  std::string dpdk_ip_;                // dpdk: our address, where bridges dial from
  std::string dpdk_ip6_;               // dpdk: our IPv6 address ("" none)
  std::vector<uint16_t> north_ports_;  // dpdk: each worker's bridge port
  std::string local_ip_;               // socket: what north sockets bind
};

}  // namespace

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Start(const RuntimeConfig& config,
                                                        RingMesh* rings,
                                                        std::vector<ActivityTable*> activity) {
  auto r = std::make_unique<RuntimeImpl>();
  if (absl::Status s = r->Init(config, rings, std::move(activity)); !s.ok()) return s;
  return r;
}

}  // namespace qbridge::dp
