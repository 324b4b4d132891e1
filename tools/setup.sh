#!/usr/bin/env bash
# Installs every Debian package qbridge needs to build, test and run. Idempotent; run as root.
# ngtcp2 1.11 (with its GnuTLS crypto backend) comes from bookworm-backports; everything else
# from bookworm itself. Nothing is downloaded outside Debian's archive.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libdpdk-dev dpdk dpdk-dev
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libgnutls28-dev gnutls-bin
  libtomlplusplus-dev nlohmann-json3-dev libcpp-httplib-dev
  libisal-dev                  # CRC32C (ISA-L) for the custody log's records
  libsqlite3-dev liblmdb-dev   # the storage benchmark's candidates (tests/bench/store_bench.cc)
  clang-14 libclang-rt-14-dev llvm-14
  mosquitto mosquitto-clients
  iproute2 iputils-ping ethtool openssl curl
  chromium                     # headless, for the dashboard's browser test (tests/dashboard/)
  python3 gnuplot-nox          # tools/bench.sh: its JSON summaries, table and plots (PNG)
)
# Only these two come from backports; apt pulls their runtime libraries along.
backports=(libngtcp2-dev/bookworm-backports libngtcp2-crypto-gnutls-dev/bookworm-backports)

missing() {
  local p name
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
  # ngtcp2 must be 1.x: bookworm itself ships 0.12.
  if ! pkg-config --atleast-version=1.11 libngtcp2_crypto_gnutls 2>/dev/null; then
    for p in "${backports[@]}"; do echo "$p"; done
  fi
  # Node.js for the interop peers (MQTT.js, @matrixai/quic); the machine image may bring its own.
  command -v node >/dev/null && command -v npm >/dev/null || { echo nodejs; echo npm; }
}

todo=$(missing)
if [[ -z $todo ]]; then
  echo "setup.sh: all packages present"
  exit 0
fi

src=/etc/apt/sources.list.d/bookworm-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat > "$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $todo

# The mosquitto package enables a system broker; tests start their own on loopback ports.
if command -v systemctl >/dev/null && systemctl is-enabled mosquitto >/dev/null 2>&1; then
  systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

pkg-config --atleast-version=1.11 libngtcp2_crypto_gnutls || { echo "setup.sh: ngtcp2 >= 1.11 missing" >&2; exit 1; }
echo "setup.sh: done"
