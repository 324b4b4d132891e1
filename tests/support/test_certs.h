// Certificates for TLS tests, made fresh per test process with the openssl CLI: a CA, a
// server certificate for localhost / 127.0.0.1 / 198.18.0.2 signed by it, a client
// certificate (mTLS), and an unrelated CA that must not be trusted. For the refusals: a
// server certificate that expired, one for another name (wrong.example), an expired client
// certificate and a client certificate from the unrelated CA.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace qbridge::testing {

struct TestCerts {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key, other_ca;
  std::string expired_server_cert, wrong_name_cert, expired_client_cert, untrusted_client_cert;
  TestCerts() = default;
  TestCerts(TestCerts&&) = default;
  ~TestCerts() {  // the process's certificates go with it
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
};

// The directory GetTestCerts made in this process ("" if none yet).
inline std::string& TestCertsDir() {
  static std::string dir;
  return dir;
}

// For a process that ends with _Exit (static destructors skipped): removes the certificates
// now, so nothing is left in /tmp.
inline void RemoveTestCertsNow() {
  if (TestCertsDir().empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(TestCertsDir(), ec);
}

inline const TestCerts& GetTestCerts() {
  static const TestCerts certs = [] {
    TestCerts c;
    char tmpl[] = "/tmp/qbridge-certs-XXXXXX";
    c.dir = mkdtemp(tmpl);
    TestCertsDir() = c.dir;
    c.ca = c.dir + "/ca.pem";
    c.server_cert = c.dir + "/server.pem";
    c.server_key = c.dir + "/server.key";
    c.client_cert = c.dir + "/client.pem";
    c.client_key = c.dir + "/client.key";
    c.other_ca = c.dir + "/other-ca.pem";
    c.expired_server_cert = c.dir + "/expired-server.pem";  // keys: server.key
    c.wrong_name_cert = c.dir + "/wrong-name.pem";
    c.expired_client_cert = c.dir + "/expired-client.pem";  // keys: client.key
    c.untrusted_client_cert = c.dir + "/untrusted-client.pem";
    const std::string d = c.dir;
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; cd " + d + "; exec >openssl.log 2>&1\n"
        "openssl req -x509 " + ec + " -keyout ca.key -out ca.pem -days 2 -subj /CN=qbridge-test-ca"
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign;"
        "openssl req -x509 " + ec + " -keyout other-ca.key -out other-ca.pem -days 2"
        " -subj /CN=untrusted-ca -addext basicConstraints=critical,CA:TRUE;"
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:198.18.0.2\\n"
        "extendedKeyUsage=serverAuth\\n' > server.ext;"
        "openssl req " + ec + " -keyout server.key -out server.csr -subj /CN=localhost;"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        " -out server.pem -extfile server.ext;"
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext;"
        "openssl req " + ec + " -keyout client.key -out client.csr -subj /CN=edge-device-1;"
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        " -out client.pem -extfile client.ext;"
        // -days -1: valid until a day before it was made.
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days -1"
        " -out expired-server.pem -extfile server.ext;"
        "printf 'subjectAltName=DNS:wrong.example\\nextendedKeyUsage=serverAuth\\n' > wrong.ext;"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        " -out wrong-name.pem -extfile wrong.ext;"
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days -1"
        " -out expired-client.pem -extfile client.ext;"
        "openssl x509 -req -in client.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 2"
        " -out untrusted-client.pem -extfile client.ext;";
    {
      std::ofstream f(d + "/make.sh");
      f << script;
    }
    if (std::system(("bash " + d + "/make.sh").c_str()) != 0) c.dir.clear();
    return c;
  }();
  return certs;
}

}  // namespace qbridge::testing
