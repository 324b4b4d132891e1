// Addresses (sockaddr storage with its length) and the connection IDs a server issues:
// 16 bytes, a reserved byte, the owning worker's id, random bytes (quic/connection.h).
#include "quic/connection.h"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <netinet/in.h>

#include <cstring>

namespace qbridge::quic {

Address Address::FromIpPort(std::string_view ip, uint16_t port) {
  Address a;
  const std::string s(ip);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, s.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, s.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len = sizeof(sockaddr_in6);
  }
  return a;
}

std::string Address::ToString() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (storage.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof(buf));
    return absl::StrCat(buf, ":", ntohs(v4->sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof(buf));
    return absl::StrCat("[", buf, "]:", ntohs(v6->sin6_port));
  }
  return "unset";
}

bool Address::operator==(const Address& o) const {
  return len == o.len && std::memcmp(&storage, &o.storage, len) == 0;
}

void RandomBytes(uint8_t* dest, size_t len) {
  // GNUTLS_RND_NONCE is a fast CSPRNG suitable for CIDs and packet randomness.
  gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
}

void MakeServerCid(uint16_t owner_id, ngtcp2_cid* cid) {
  cid->datalen = kServerCidLen;
  RandomBytes(cid->data, kServerCidLen);
  cid->data[0] = 0;
  cid->data[1] = uint8_t(owner_id >> 8);
  cid->data[2] = uint8_t(owner_id);
}

uint16_t CidOwner(const uint8_t* cid, size_t len) {
  return len >= 3 ? uint16_t(cid[1] << 8 | cid[2]) : 0;
}

}  // namespace qbridge::quic
