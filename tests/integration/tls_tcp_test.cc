// MQTT over TLS on TCP through the real `qbridge` binary, against peers nobody here wrote:
//   - mosquitto_pub / mosquitto_sub (OpenSSL) with --cafile on qbridge's [listeners.ssl],
//     TLS 1.3 (and OpenSSL's s_client held to TLS 1.2), with client certificates (mTLS)
//     when the listener asks for them;
//   - refusals with a clear log line: a CA the client does not trust, an expired server
//     certificate, a certificate for another host name, a missing / expired / untrusted
//     client certificate;
//   - a tls+mqtt-tcp:// bridge into mosquitto with TLS and mTLS, 1,000 QoS 1 messages
//     sequence-checked end to end; a bridge to a server with a certificate for another name
//     (or an expired one) refused, the reason in the bridge's events;
//   - hybrid bridging falling back from QUIC to TLS over TCP.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/mqtt_tcp_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_certs.h"

#ifndef QBRIDGE_BIN
#error "QBRIDGE_BIN must be defined"
#endif

namespace qbridge::testing {
namespace {

using nlohmann::json;

// A qbridge started from a config file; its ports from the line it prints.
struct Qbridge {
  Subprocess proc;
  int tcp = 0, tls = 0, http = 0;
  std::string log_path;
  std::string Log() const {
    std::ifstream f(log_path);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
};

class TlsTcpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!MosquittoBroker::Available()) GTEST_SKIP() << "mosquitto is not installed (tools/setup.sh)";
    ASSERT_FALSE(certs().dir.empty()) << "openssl could not make the test certificates";
    char tmpl[] = "/tmp/qbridge-tls-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_, ec);
  }
  static const TestCerts& certs() { return GetTestCerts(); }

  // [listeners.tcp], [listeners.ssl] with `ssl` (key = value lines) and REST, on loopback.
  static std::string Listeners(const std::string& ssl) {
    return "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n\n[listeners.ssl]\nbind = \"127.0.0.1:0\"\n" + ssl +
           "\n[http_server]\nbind = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"pw\"\n";
  }
  static std::string ServerCert(const std::string& cert) {
    return "certfile = \"" + cert + "\"\nkeyfile = \"" + certs().server_key + "\"\n";
  }
  void Start(Qbridge& q, const std::string& name, const std::string& toml) {
    const std::string conf = dir_ + "/" + name + ".toml";
    std::ofstream(conf) << toml;
    q.log_path = dir_ + "/" + name + ".log";
    ASSERT_TRUE(q.proc.Start({QBRIDGE_BIN, "--config", conf}, q.log_path));
    const json j = json::parse(q.proc.ReadLine(15000), nullptr, false);
    ASSERT_TRUE(j.is_object()) << q.Log();
    q.tcp = j.value("tcp_port", 0);
    q.tls = j.value("tls_port", 0);
    q.http = j.value("http_port", 0);
    ASSERT_GT(q.http, 0) << q.Log();
  }
  void Stop(Qbridge& q) {
    q.proc.Signal(SIGTERM);
    EXPECT_EQ(q.proc.Wait(10000), 0) << q.Log();
  }
  // Runs a client to completion: its exit status and stdout lines.
  std::pair<int, std::vector<std::string>> Run(std::vector<std::string> argv, int timeout_ms = 10000) {
    Subprocess p;
    EXPECT_TRUE(p.Start(argv, dir_ + "/client.err"));
    std::vector<std::string> out;
    for (std::string l; !(l = p.ReadLine(timeout_ms)).empty();) out.push_back(l);
    return {p.Wait(5000), out};
  }
  std::unique_ptr<Subprocess> Spawn(std::vector<std::string> argv) {
    auto p = std::make_unique<Subprocess>();
    EXPECT_TRUE(p->Start(argv, dir_ + "/spawn.err"));
    return p;
  }
  // mosquitto_pub over TLS to `port`, trusting `ca`: a QoS 1 `topic` `message`, with `extra`
  // arguments; its exit status.
  int Publish(int port, const std::string& ca, std::vector<std::string> extra = {},
              const std::string& topic = "tls/probe", const std::string& message = "x") {
    std::vector<std::string> argv = {"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port), "--cafile",
                                     ca, "-t", topic, "-m", message, "-q", "1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Run(argv).first;
  }
  // OpenSSL's s_client held to TLS 1.2, verifying against `ca`: sends `bytes` (printf
  // escapes), lingers `linger_s`, and returns its exit status.
  int OpensslTls12(int port, const std::string& ca, const std::string& bytes, int linger_s = 1) {
    const std::string cmd = "(printf '" + bytes + "'; sleep " + std::to_string(linger_s) +
                            ") | openssl s_client -tls1_2 -quiet -no_ign_eof -verify_return_error -CAfile " + ca +
                            " -connect 127.0.0.1:" + std::to_string(port) + " >/dev/null 2>&1";
    return Run({"sh", "-c", cmd}, 15000).first;
  }
  // Waits (bounded) for `text` to appear in q's log.
  static bool LogHas(const Qbridge& q, const std::string& text) {
    for (int i = 0; i < 50; ++i) {
      if (q.Log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  json Bridge(const Qbridge& q, const std::string& name) {
    auto [rc, out] = Run({"curl", "-s", "-g", "-w", "\n", "-u", "admin:pw",
                          "http://127.0.0.1:" + std::to_string(q.http) + "/api/v4/bridges/" + name +
                              "?detail=true"});
    json j = json::parse(out.empty() ? "{}" : out[0], nullptr, false);
    return j.is_object() && j.contains("data") ? j["data"] : json();
  }
  bool BridgeComesUp(const Qbridge& q, const std::string& name) {
    for (int i = 0; i < 100; ++i) {
      if (Bridge(q, name).value("connected", false)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  // The bridge's connection events, once one of them contains `text` (bounded wait).
  std::string EventWith(const Qbridge& q, const std::string& name, const std::string& text) {
    std::string all;
    for (int i = 0; i < 100; ++i) {
      all = Bridge(q, name).value("events", json::array()).dump();
      if (all.find(text) != std::string::npos) return all;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return all;
  }

  std::string dir_;
};

// mosquitto_sub and mosquitto_pub over TLS 1.3 and 1.2 with --cafile; a plain-TCP publisher's
// message reaches the TLS subscriber too (both listeners feed one router).
TEST_F(TlsTcpTest, MosquittoClientsWithCafileOverTls12And13) {
  Qbridge q;
  ASSERT_NO_FATAL_FAILURE(Start(q, "qb", Listeners(ServerCert(certs().server_cert))));
  ASSERT_GT(q.tls, 0) << q.Log();
  const std::string tls = std::to_string(q.tls);
  auto sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", tls, "--cafile", certs().ca, "-t", "tls/#",
                    "-q", "1", "-v", "-C", "5", "-W", "20", "-V", "mqttv5"});
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_EQ(Publish(q.tls, certs().ca, {"--tls-version", "tlsv1.3"}, "tls/v13", "a"), 0);
  // TLS 1.2 (mosquitto's --tls-version is a minimum, so OpenSSL's s_client, held to 1.2):
  // a raw MQTT 3.1.1 CONNECT (empty client id, clean session) and a QoS 0 PUBLISH.
  EXPECT_EQ(OpensslTls12(q.tls, certs().ca,
                         "\\020\\014\\000\\004MQTT\\004\\002\\000\\000\\000\\000"
                         "\\060\\012\\000\\007tls/v12b"),
            0);
  // By name: the certificate's DNS SAN is checked against "localhost".
  EXPECT_EQ(Publish(q.tls, certs().ca, {"-h", "localhost"}, "tls/byname", "c"), 0);
  EXPECT_EQ(Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(q.tcp), "-t", "tls/plain", "-m", "d",
                 "-q", "1"})
                .first,
            0);
  // A QoS 1 message with a payload over one TLS record (16 KiB).
  const std::string big(40000, 'z');
  EXPECT_EQ(Publish(q.tls, certs().ca, {}, "tls/big", big), 0);
  std::vector<std::string> got;
  for (std::string l; got.size() < 5 && !(l = sub->ReadLine(20000)).empty();) got.push_back(l);
  EXPECT_EQ(got, (std::vector<std::string>{"tls/v13 a", "tls/v12 b", "tls/byname c", "tls/plain d",
                                           "tls/big " + big}))
      << q.Log();
  Stop(q);
}

// The client refuses qbridge's certificate (a CA it does not trust, an expired certificate,
// a certificate for another name): the client fails, and qbridge's log says which handshake
// failed and how it saw it.
TEST_F(TlsTcpTest, ClientsRefuseWrongCaExpiredAndWrongName) {
  Qbridge good, expired, wrong_name;
  ASSERT_NO_FATAL_FAILURE(Start(good, "good", Listeners(ServerCert(certs().server_cert))));
  ASSERT_NO_FATAL_FAILURE(Start(expired, "expired", Listeners(ServerCert(certs().expired_server_cert))));
  ASSERT_NO_FATAL_FAILURE(Start(wrong_name, "wrong", Listeners(ServerCert(certs().wrong_name_cert))));

  EXPECT_NE(Publish(good.tls, certs().other_ca), 0) << "a client trusting another CA got in";
  EXPECT_TRUE(LogHas(good, "TLS listener: handshake from 127.0.0.1:")) << good.Log();
  EXPECT_NE(Publish(expired.tls, certs().ca), 0) << "an expired server certificate was accepted";
  EXPECT_TRUE(LogHas(expired, "TLS listener: handshake from 127.0.0.1:")) << expired.Log();
  EXPECT_NE(Publish(wrong_name.tls, certs().ca), 0) << "a certificate for wrong.example passed as 127.0.0.1";
  EXPECT_TRUE(LogHas(wrong_name, "TLS listener: handshake from 127.0.0.1:")) << wrong_name.Log();
  // TLS 1.2: OpenSSL's alert arrives readable and the log names it.
  EXPECT_NE(OpensslTls12(good.tls, certs().other_ca, "", 0), 0);
  EXPECT_TRUE(LogHas(good, "the peer sent alert \"CA is unknown\"")) << good.Log();
  // Nothing that failed counts as a session; the same listener still serves a good client.
  EXPECT_EQ(Publish(good.tls, certs().ca), 0) << good.Log();
  for (Qbridge* q : {&good, &expired, &wrong_name}) Stop(*q);
}

// verify_peer with fail_if_no_peer_cert: a client certificate from the CA gets in; none, an
// expired one or one from another CA is refused with the reason in the log. Without
// fail_if_no_peer_cert a client without one gets in, one with a bad one still does not.
TEST_F(TlsTcpTest, MutualTlsChecksClientCertificates) {
  const std::string verify = "cacertfile = \"" + certs().ca + "\"\nverify_peer = true\n";
  Qbridge strict, lenient;
  ASSERT_NO_FATAL_FAILURE(Start(strict, "strict",
                                Listeners(ServerCert(certs().server_cert) + verify + "fail_if_no_peer_cert = true\n")));
  ASSERT_NO_FATAL_FAILURE(Start(lenient, "lenient", Listeners(ServerCert(certs().server_cert) + verify)));
  const std::vector<std::string> good = {"--cert", certs().client_cert, "--key", certs().client_key};
  EXPECT_EQ(Publish(strict.tls, certs().ca, good), 0) << strict.Log();
  EXPECT_NE(Publish(strict.tls, certs().ca), 0) << "no client certificate, yet admitted";
  EXPECT_TRUE(LogHas(strict, "certificate")) << strict.Log();
  EXPECT_NE(Publish(strict.tls, certs().ca, {"--cert", certs().expired_client_cert, "--key", certs().client_key}), 0);
  EXPECT_TRUE(LogHas(strict, "expired")) << strict.Log();
  EXPECT_NE(Publish(strict.tls, certs().ca, {"--cert", certs().untrusted_client_cert, "--key", certs().client_key}),
            0);
  EXPECT_TRUE(LogHas(strict, "issuer is unknown")) << strict.Log();

  EXPECT_EQ(Publish(lenient.tls, certs().ca), 0) << lenient.Log();
  EXPECT_EQ(Publish(lenient.tls, certs().ca, good), 0) << lenient.Log();
  EXPECT_NE(Publish(lenient.tls, certs().ca, {"--cert", certs().untrusted_client_cert, "--key", certs().client_key}),
            0);
  EXPECT_TRUE(LogHas(lenient, "issuer is unknown")) << lenient.Log();
  // The strict listener's three refusals were counted (REST refreshes every 200 ms).
  std::string metrics;
  double failures = 0;
  for (int i = 0; i < 30 && failures < 3; ++i) {
    if (i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto [rc, out] = Run({"curl", "-s", "-u", "admin:pw", "http://127.0.0.1:" + std::to_string(strict.http) + "/metrics"});
    metrics.clear();
    failures = 0;
    for (const auto& l : out) {
      metrics += l + "\n";
      // qbridge_tls_handshake_failures{worker="N"} V, summed over workers.
      if (l[0] != '#' && l.find("tls_handshake_failures{") != std::string::npos)
        failures += std::atof(l.substr(l.rfind(' ') + 1).c_str());
    }
  }
  EXPECT_NE(metrics.find("tls_handshake_failures"), std::string::npos) << metrics;
  EXPECT_GE(failures, 3) << "no certificate, expired, untrusted:\n" << metrics;
  for (Qbridge* q : {&strict, &lenient}) Stop(*q);
}

// A tls+mqtt-tcp:// bridge into mosquitto with TLS that requires client certificates: 1,000
// QoS 1 messages from a device on qbridge's TCP listener reach a subscriber on mosquitto once
// each, in order; a command published on mosquitto comes back down over the same link.
TEST_F(TlsTcpTest, TlsBridgeIntoMosquittoCarriesQos1InOrder) {
  auto broker = MosquittoBroker::Start(
      {.certfile = certs().server_cert, .keyfile = certs().server_key, .cafile = certs().ca});
  ASSERT_TRUE(broker.ok()) << broker.status();
  const std::string mosq = std::to_string((*broker)->port());
  Qbridge q;
  ASSERT_NO_FATAL_FAILURE(Start(q, "bridge", Listeners(ServerCert(certs().server_cert)) + R"(
[bridges.mqtt.cloud]
server = "tls+mqtt-tcp://127.0.0.1:)" + mosq + R"("
proto_ver = 4
clientid = "qbridge-tls-bridge"
keepalive = "5s"
backoff_max = "1s"
ssl = { cacertfile = ")" + certs().ca + R"(", certfile = ")" + certs().client_cert + R"(", keyfile = ")" +
                                                 certs().client_key + R"(" }
forwards = [{ local_topic = "up/#", remote_topic = "", prefix = "site/", qos = 1 }]
subscription = [{ remote_topic = "cmd/#", local_topic = "#", prefix = "down/", qos = 1 }]
)"));
  ASSERT_TRUE(BridgeComesUp(q, "cloud")) << q.Log();
  const std::vector<std::string> mosq_tls = {"-h", "127.0.0.1", "-p", mosq, "--cafile", certs().ca,
                                             "--cert", certs().client_cert, "--key", certs().client_key};
  std::vector<std::string> sub_argv = {"mosquitto_sub", "-t", "site/#", "-q", "1", "-C", "1000", "-W", "60"};
  sub_argv.insert(sub_argv.end(), mosq_tls.begin(), mosq_tls.end());
  auto up_sub = Spawn(sub_argv);
  auto down_sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", std::to_string(q.tls), "--cafile", certs().ca,
                         "-t", "down/#", "-q", "1", "-v", "-C", "1", "-W", "30"});
  std::this_thread::sleep_for(std::chrono::milliseconds(800));

  // The device: QoS 1 with up to 32 in flight, every PUBACK awaited.
  auto dev = MqttTcpClient::Dial("127.0.0.1", uint16_t(q.tcp), absl::Seconds(2));
  ASSERT_TRUE(dev.ok()) << dev.status();
  mqtt::Connect conn;
  conn.version = mqtt::Version::k311;
  conn.client_id = "tls-seq-device";
  conn.keep_alive = 0;
  ASSERT_TRUE((*dev)->Send(conn).ok());
  ASSERT_TRUE((*dev)->Receive(absl::Seconds(5)).ok());
  constexpr int kMessages = 1000;
  int sent = 0, acked = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (acked < kMessages && std::chrono::steady_clock::now() < end) {
    while (sent < kMessages && sent - acked < 32) {
      mqtt::Publish p;
      p.qos = mqtt::QoS::k1;
      p.topic = "up/seq";
      p.packet_id = uint16_t(sent % 65535 + 1);
      const std::string body = "seq " + std::to_string(sent);
      p.payload = mqtt::Bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      ASSERT_TRUE((*dev)->Send(p).ok());
      ++sent;
    }
    auto r = (*dev)->Receive(absl::Seconds(5));
    ASSERT_TRUE(r.ok()) << r.status() << q.Log();
    if (std::holds_alternative<mqtt::PubAck>(r->packet)) ++acked;
  }
  ASSERT_EQ(acked, kMessages);
  int next = 0, wrong = 0;
  for (std::string l; next + wrong < kMessages && !(l = up_sub->ReadLine(30000)).empty();) {
    (l == "seq " + std::to_string(next) ? next : wrong)++;
  }
  EXPECT_EQ(next, kMessages) << "in order, once each";
  EXPECT_EQ(wrong, 0);

  std::vector<std::string> pub = {"mosquitto_pub", "-t", "cmd/reboot", "-m", "now", "-q", "1"};
  pub.insert(pub.end(), mosq_tls.begin(), mosq_tls.end());
  EXPECT_EQ(Run(pub).first, 0);
  EXPECT_EQ(down_sub->ReadLine(20000), "down/reboot now") << q.Log();  // local_topic "#": prefix + the rest
  Stop(q);
}

// A bridge refuses an upstream whose certificate names another host, or has expired, or
// comes from a CA it does not trust: it never connects, its log and its events say why.
TEST_F(TlsTcpTest, BridgeRefusesWrongNameExpiredAndUntrustedUpstreams) {
  auto wrong_name = MosquittoBroker::Start({.certfile = certs().wrong_name_cert, .keyfile = certs().server_key});
  auto expired = MosquittoBroker::Start({.certfile = certs().expired_server_cert, .keyfile = certs().server_key});
  auto good = MosquittoBroker::Start({.certfile = certs().server_cert, .keyfile = certs().server_key});
  ASSERT_TRUE(wrong_name.ok() && expired.ok() && good.ok());
  auto bridge = [&](const std::string& name, uint16_t port, const std::string& ca) {
    return "\n[bridges.mqtt." + name + "]\nserver = \"tls+mqtt-tcp://127.0.0.1:" + std::to_string(port) +
           "\"\nclientid = \"qb-" + name + "\"\nkeepalive = \"5s\"\nbackoff_max = \"1s\"\nssl = { cacertfile = \"" +
           ca + "\" }\nforwards = [{ local_topic = \"" + name + "/#\", remote_topic = \"\", qos = 1 }]\n";
  };
  Qbridge q;
  ASSERT_NO_FATAL_FAILURE(Start(q, "refusing",
                                "[http_server]\nbind = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"pw\"\n" +
                                    bridge("wrongname", (*wrong_name)->port(), certs().ca) +
                                    bridge("expired", (*expired)->port(), certs().ca) +
                                    bridge("untrusted", (*good)->port(), certs().other_ca)));
  EXPECT_NE(EventWith(q, "wrongname", "TLS handshake failed").find("certificate verification failed"),
            std::string::npos)
      << q.Log();
  EXPECT_NE(EventWith(q, "expired", "TLS handshake failed").find("expired"), std::string::npos) << q.Log();
  EXPECT_NE(EventWith(q, "untrusted", "TLS handshake failed").find("issuer is unknown"), std::string::npos)
      << q.Log();
  EXPECT_TRUE(LogHas(q, "does not match")) << q.Log();  // GnuTLS: the name "does not match"
  for (const char* b : {"wrongname", "expired", "untrusted"}) {
    EXPECT_FALSE(Bridge(q, b).value("connected", true)) << b;
  }
  Stop(q);
}

// Hybrid bridging: the QUIC upstream does not answer, the bridge falls back to the next
// server, over TLS on TCP, and carries traffic there.
TEST_F(TlsTcpTest, HybridBridgingFallsBackFromQuicToTlsTcp) {
  auto broker = MosquittoBroker::Start({.certfile = certs().server_cert, .keyfile = certs().server_key});
  ASSERT_TRUE(broker.ok()) << broker.status();
  const std::string mosq = std::to_string((*broker)->port());
  Qbridge q;
  ASSERT_NO_FATAL_FAILURE(Start(q, "hybrid", Listeners(ServerCert(certs().server_cert)) + R"(
[bridges.mqtt.either]
server = "mqtt-quic://127.0.0.1:9"
proto_ver = 4
clientid = "qbridge-hybrid-tls"
keepalive = "5s"
backoff_max = "1s"
quic_handshake_timeout = "1s"
quic_idle_timeout = "10s"
quic_keepalive = "4s"
ssl = { cacertfile = ")" + certs().ca + R"(" }
hybrid_bridging = true
hybrid_servers = ["mqtt-quic://127.0.0.1:9", "tls+mqtt-tcp://127.0.0.1:)" + mosq + R"("]
forwards = [{ local_topic = "hy/#", remote_topic = "", prefix = "via-tls/", qos = 1 }]
)"));
  ASSERT_TRUE(BridgeComesUp(q, "either")) << q.Log();
  auto sub = Spawn({"mosquitto_sub", "-h", "127.0.0.1", "-p", mosq, "--cafile", certs().ca, "-t", "via-tls/#",
                    "-q", "1", "-v", "-C", "1", "-W", "15"});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(q.tcp), "-t", "hy/x", "-m", "fallback",
                 "-q", "1"})
                .first,
            0);
  EXPECT_EQ(sub->ReadLine(15000), "via-tls/hy/x fallback") << q.Log();
  EXPECT_NE(EventWith(q, "either", "connected (hybrid server 1)").find("connected (hybrid server 1)"),
            std::string::npos);
  Stop(q);
}

}  // namespace
}  // namespace qbridge::testing
